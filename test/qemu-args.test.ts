// Pure tests of the VM plumbing: qemu's argv, the recipe hash, the results
// channel parser, mmdebstrap's argv, the KVM probe's boot sector, and the
// nspawn argv rewrite for the VM.
import { describe, expect, it } from 'vitest';
import { buildQemuArgs, qemuEscape, type QemuSpec } from '../src/tools/qemu.js';
import { loadRecipe, recipeHash, validateRecipe, type VmRecipe } from '../src/vm/recipe.js';
import { parseResults, vmFailure, jobCmdline, type VmResult } from '../src/vm/run.js';
import { consoleTail } from '../src/boot/console.js';
import { buildMmdebstrapArgs } from '../src/tools/mmdebstrap.js';
import { bootSector } from '../src/vm/kvm.js';
import { nspawnArgsForVm, NSPAWN_VM_DISK, withProbeReport } from '../src/vm/nspawn-in-vm.js';
import { hotplugDiskCommands } from '../src/vm/qmp.js';
import { readyCmdline, stateKey, stateKeyParts, READY_WORD, type MachineShape } from '../src/vm/state.js';
import { resultsSay } from '../src/vm/job.js';
import { defaultBoot } from '../src/vm/run.js';
import { buildOverlayArgs } from '../src/tools/qemu-img.js';

const base: QemuSpec = {
  accel: 'tcg',
  memoryMb: 1024,
  cpus: 2,
  kernel: '/c/vmlinuz',
  initrd: '/c/initrd.img',
  append: ['root=/dev/vda', 'rw', 'console=ttyS0'],
  disks: [
    { path: '/c/root.img', serial: 'pi-root', snapshot: true },
    { path: '/t/job.tar', serial: 'pi-job', readOnly: true },
  ],
  serialFiles: ['/t/console.log', '/t/results.log'],
  pidFile: '/t/qemu.pid',
};

/** The values of every occurrence of `flag`. */
function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]] : []));
}

describe('buildQemuArgs', () => {
  it('boots the kernel headless under TCG with -cpu max, no network, no reboot', () => {
    const args = buildQemuArgs(base);
    expect(values(args, '-accel')).toEqual(['tcg']);
    expect(values(args, '-cpu')).toEqual(['max']);
    expect(values(args, '-m')).toEqual(['1024']);
    expect(values(args, '-smp')).toEqual(['2']);
    expect(values(args, '-kernel')).toEqual(['/c/vmlinuz']);
    expect(values(args, '-initrd')).toEqual(['/c/initrd.img']);
    expect(values(args, '-append')).toEqual(['root=/dev/vda rw console=ttyS0']);
    expect(values(args, '-display')).toEqual(['none']);
    expect(values(args, '-nic')).toEqual(['none']);
    expect(values(args, '-pidfile')).toEqual(['/t/qemu.pid']);
    expect(args).toContain('-no-reboot');
    expect(args).toContain('-nodefaults');
  });

  it('uses -cpu host under KVM unless told otherwise', () => {
    expect(values(buildQemuArgs({ ...base, accel: 'kvm' }), '-cpu')).toEqual(['host']);
    expect(values(buildQemuArgs({ ...base, accel: 'kvm', cpu: 'qemu64' }), '-cpu')).toEqual(['qemu64']);
  });

  it('attaches disks in order as virtio-blk with serials; root as snapshot, others read-only', () => {
    const args = buildQemuArgs(base);
    expect(values(args, '-drive')).toEqual([
      'file=/c/root.img,format=raw,if=none,id=disk0,cache=unsafe,snapshot=on',
      'file=/t/job.tar,format=raw,if=none,id=disk1,cache=unsafe,readonly=on',
    ]);
    expect(values(args, '-device').filter((d) => d.startsWith('virtio-blk'))).toEqual([
      'virtio-blk-pci,drive=disk0,serial=pi-root',
      'virtio-blk-pci,drive=disk1,serial=pi-job',
    ]);
  });

  it('writes ttyS0 and ttyS1 to files, in that order', () => {
    const args = buildQemuArgs(base);
    expect(values(args, '-chardev')).toEqual(['file,id=serial0,path=/t/console.log', 'file,id=serial1,path=/t/results.log']);
    expect(values(args, '-serial')).toEqual(['chardev:serial0', 'chardev:serial1']);
  });

  it('doubles commas in paths so that qemu does not split them', () => {
    expect(qemuEscape('/a,b/c')).toBe('/a,,b/c');
    const args = buildQemuArgs({ ...base, disks: [{ path: '/x,y.img', serial: 's' }], serialFiles: ['/o,1'] });
    expect(values(args, '-drive')[0]).toMatch(/^file=\/x,,y\.img,format=raw/);
    expect(values(args, '-chardev')[0]).toBe('file,id=serial0,path=/o,,1');
  });

  it('refuses a serial the guest could not name a by-id link after', () => {
    expect(() => buildQemuArgs({ ...base, disks: [{ path: '/a', serial: 'has space' }] })).toThrow(/serial/);
    expect(() => buildQemuArgs({ ...base, disks: [{ path: '/a', serial: 'x'.repeat(21) }] })).toThrow(/serial/);
  });

  it('boots a boot sector with isa-debug-exit for the KVM probe', () => {
    const args = buildQemuArgs({ ...base, disks: [], serialFiles: ['/t/s'], bootSector: '/t/boot.bin', debugExit: true, accel: 'kvm' });
    expect(args).not.toContain('-kernel');
    expect(values(args, '-drive')).toEqual(['file=/t/boot.bin,format=raw,if=ide,snapshot=on']);
    expect(values(args, '-device')).toContain('isa-debug-exit,iobase=0xf4,iosize=0x04');
  });
});

describe('KVM probe boot sector', () => {
  it('is one bootable sector that writes to COM1 and to the debug-exit port', () => {
    const s = bootSector();
    expect(s.length).toBe(512);
    expect([s[510], s[511]]).toEqual([0x55, 0xaa]);
    expect(s.subarray(0, 5)).toEqual(Buffer.from([0xb0, 0x4f, 0xba, 0xf8, 0x03]));
    expect(s.includes(Buffer.from([0xe6, 0xf4]))).toBe(true);
  });
});

describe('the saved VM: qemu argv, key, hot-plug', () => {
  it('names the machine type, and serves QMP, loads a saved state and starts paused when asked', () => {
    const plain = buildQemuArgs(base);
    expect(values(plain, '-machine')).toEqual(['pc']);
    expect(plain).not.toContain('-qmp');
    expect(plain).not.toContain('-incoming');
    expect(plain).not.toContain('-S');
    const args = buildQemuArgs({ ...base, qmpSocket: '/t/q,1.sock', incomingState: "/c/it's/vm.state", paused: true });
    expect(values(args, '-qmp')).toEqual(['unix:/t/q,,1.sock,server=on,wait=off']);
    // qemu hands the exec: command to /bin/sh: the path is quoted for it.
    expect(values(args, '-incoming')).toEqual(["exec:cat '/c/it'\\''s/vm.state'"]);
    expect(args).toContain('-S');
  });

  it('keys a state by the image, qemu, machine, CPU model, accelerator, memory, CPUs and command line', async () => {
    const recipe = await loadRecipe();
    const image = { hash: 'abcd', recipe } as never;
    const shape: MachineShape = { accel: 'tcg', cpu: 'max', memoryMb: 1024, cpus: 1 };
    const key = stateKey(stateKeyParts(image, shape, '7.2.22'));
    expect(key).toMatch(/^[0-9a-f]{16}$/);
    expect(stateKey(stateKeyParts(image, shape, '7.2.22'))).toBe(key);
    const others = [
      stateKeyParts({ hash: 'abce', recipe } as never, shape, '7.2.22'),
      stateKeyParts(image, shape, '8.0.0'),
      stateKeyParts(image, { ...shape, accel: 'kvm' }, '7.2.22'),
      stateKeyParts(image, { ...shape, cpu: 'host' }, '7.2.22'),
      stateKeyParts(image, { ...shape, memoryMb: 2048 }, '7.2.22'),
      stateKeyParts(image, { ...shape, cpus: 2 }, '7.2.22'),
      stateKeyParts({ hash: 'abcd', recipe: { ...recipe, kernelCmdline: [...recipe.kernelCmdline, 'quiet'] } } as never, shape, '7.2.22'),
    ].map(stateKey);
    expect(new Set([key, ...others]).size).toBe(others.length + 1);
    expect(readyCmdline(image)).toEqual([...recipe.kernelCmdline, 'systemd.wants=part-image-job.service', READY_WORD]);
  });

  it('hot-plugs a disk as a blockdev plus a virtio-blk-pci device with its serial', () => {
    expect(hotplugDiskCommands('hp0', '/t/img.raw', 'pi-img-0', { readOnly: true })).toEqual([
      ['blockdev-add', { 'node-name': 'hp0', driver: 'raw', 'read-only': true, cache: { 'no-flush': true }, file: { driver: 'file', filename: '/t/img.raw', 'read-only': true } }],
      ['device_add', { driver: 'virtio-blk-pci', drive: 'hp0', serial: 'pi-img-0', id: 'dev-hp0' }],
    ]);
    expect(hotplugDiskCommands('hp1', '/t/s.img', 'pi-scratch')[0][1]).toMatchObject({ 'read-only': false });
  });

  it('makes the saved root an overlay of root.img', () => {
    expect(buildOverlayArgs('/c/root.img', 'raw', '/c/s/disk.qcow2')).toEqual(['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', '/c/root.img', '/c/s/disk.qcow2']);
  });

  it("sees the runner's words only once their line has ended", () => {
    expect(resultsSay('PART-IMAGE-VM ready\n', 'ready')).toBe(true);
    expect(resultsSay('PART-IMAGE-VM ready', 'ready')).toBe(false);
    expect(resultsSay('noise\r\nPART-IMAGE-VM exit 3\r\n', 'exit ')).toBe(true);
    expect(resultsSay('PART-IMAGE-VM begin\n', 'exit ')).toBe(false);
  });

  it('restores by default, boots cold when PART_IMAGE_VM_BOOT=cold', () => {
    expect(defaultBoot({})).toBe('restore');
    expect(defaultBoot({ PART_IMAGE_VM_BOOT: 'cold' })).toBe('cold');
    expect(defaultBoot({ PART_IMAGE_VM_BOOT: 'restore' })).toBe('restore');
  });
});

describe('VM recipe', () => {
  it('loads vm/recipe.json with the packages the brief requires', async () => {
    const r = await loadRecipe();
    for (const p of ['systemd', 'systemd-sysv', 'dbus', 'systemd-container', 'udev', 'linux-image-cloud-amd64', 'initramfs-tools', 'kmod']) {
      expect(r.include).toContain(p);
    }
    expect(r.suite).toBe('bookworm');
    expect(r.variant).toBe('minbase');
    // serial-getty must never own ttyS0's session: masked twice.
    expect(r.symlinks['/etc/systemd/system/serial-getty@ttyS0.service']).toBe('/dev/null');
    expect(r.kernelCmdline).toContain('systemd.mask=serial-getty@ttyS0.service');
    const unit = r.files['/etc/systemd/system/part-image-job.service'].content.join('\n');
    expect(unit).toMatch(/\[Unit\][^[]*SuccessAction=poweroff-force/);
    expect(unit).toMatch(/\[Unit\][^[]*FailureAction=poweroff-force/);
    expect(jobCmdline({ recipe: r } as never)).toContain('systemd.wants=part-image-job.service');
  });

  it('hashes what goes into the image: key order, the description and run-time settings do not count', async () => {
    const r = await loadRecipe();
    const reordered = JSON.parse(JSON.stringify(Object.fromEntries(Object.entries(r).reverse()))) as VmRecipe;
    expect(recipeHash(reordered)).toBe(recipeHash(r));
    expect(recipeHash({ ...r, description: 'other words' })).toBe(recipeHash(r));
    // Run-time settings do not make a new image.
    expect(recipeHash({ ...r, vm: { memoryMb: 4096, maxCpus: 4 }, kernelCmdline: ['quiet'] })).toBe(recipeHash(r));
    expect(recipeHash({ ...r, include: [...r.include, 'vim'] })).not.toBe(recipeHash(r));
    expect(recipeHash(r)).toMatch(/^[0-9a-f]{16}$/);
  });

  it('names the problem in a broken recipe', async () => {
    const r = await loadRecipe();
    expect(() => validateRecipe({ ...r, include: [] })).toThrow(/include/);
    expect(() => validateRecipe({ ...r, files: { 'etc/x': { mode: '0644', content: [] } } })).toThrow(/absolute/);
    expect(() => validateRecipe({ ...r, files: { '/etc/x': { mode: 'rw', content: [] } } })).toThrow(/mode/);
  });

  it('builds the mmdebstrap argv: minbase, the packages, the overlay hook, the output tar', async () => {
    const r = await loadRecipe();
    const args = buildMmdebstrapArgs(r, '/w/overlay dir', '/w/root.tar');
    expect(args).toContain('--variant=minbase');
    expect(args).toContain(`--include=${r.include.join(',')}`);
    expect(args.find((a) => a.startsWith('--customize-hook='))).toContain("tar -C '/w/overlay dir' --owner=0 --group=0");
    expect(args.slice(-2)).toEqual(['bookworm', '/w/root.tar']);
  });
});

describe('results channel', () => {
  const stream = [
    'PART-IMAGE-VM begin\r',
    'PART-IMAGE-VM started\r',
    'PART-IMAGE-VM file state',
    Buffer.from('running\n').toString('base64'),
    'PART-IMAGE-VM end-file',
    'PART-IMAGE-VM file empty',
    '',
    'PART-IMAGE-VM end-file',
    'PART-IMAGE-VM file job.log',
    Buffer.from('line 1\nline 2\n').toString('base64'),
    'PART-IMAGE-VM end-file',
    'PART-IMAGE-VM exit 3',
    '',
  ].join('\n');

  it('decodes files, the start and the exit status', () => {
    const r = parseResults(stream);
    expect(r.started).toBe(true);
    expect(r.exitCode).toBe(3);
    expect(r.files.get('state')?.toString()).toBe('running\n');
    expect(r.files.get('empty')?.length).toBe(0);
    expect(r.files.get('job.log')?.toString()).toBe('line 1\nline 2\n');
    expect(r.errors).toEqual([]);
  });

  it('keeps what arrived whole from a stream cut off mid-file', () => {
    const cut = stream.slice(0, stream.indexOf('PART-IMAGE-VM file job.log') + 40);
    const r = parseResults(cut);
    expect(r.exitCode).toBeUndefined();
    expect([...r.files.keys()]).toEqual(['state', 'empty']);
  });

  it('reports runner errors', () => {
    expect(parseResults('PART-IMAGE-VM begin\nPART-IMAGE-VM error no job disk\n').errors).toEqual(['no job disk']);
  });

  const failed = (over: Partial<VmResult>): VmResult => ({
    started: false, files: new Map(), errors: [], accel: 'tcg', timedOut: false, qemuExitCode: 0, qemuStderr: '',
    console: '[    1.0] Linux version 6.1\n\x1b[0;32m  OK  \x1b[0m] Reached target x\n', jobLog: '', durationMs: 1, boot: 'cold', phases: {}, ...over,
  });

  it('says why a VM run delivered nothing', () => {
    expect(vmFailure(failed({ exitCode: 0 }), 1000)).toBeUndefined();
    expect(vmFailure(failed({ timedOut: true }), 60_000)).toMatch(/killed after 60 s: the VM had not finished booting; last console line: .*Reached target x/);
    expect(vmFailure(failed({ timedOut: true, started: true }), 60_000)).toMatch(/the job was still running/);
    expect(vmFailure(failed({ qemuExitCode: 1, qemuStderr: 'qemu: could not open disk\n' }), 1)).toMatch(/qemu exit 1.*could not open disk/);
    expect(vmFailure(failed({ errors: ['no job disk'] }), 1)).toMatch(/no job disk/);
    expect(consoleTail('a\n\x1b[0;32mOK\x1b[0m b\r\n\n', 5)).toEqual(['a', 'OK b']);
  });
});

describe('nspawn arguments for the VM', () => {
  it('swaps the directory for the VM disk and moves host probe paths to the guest copy', () => {
    const args = nspawnArgsForVm(
      ['--quiet', '--directory=/tmp/mnt', '--bind-ro=/tmp/p/probe.service:/etc/systemd/system/probe.service', '--bind-ro=/tmp/p:/run/probe', '--bind-ro=/tmp/px:/x', '-b'],
      '/tmp/p/',
    );
    expect(args).toEqual([
      `--image=${NSPAWN_VM_DISK}`,
      '--quiet',
      '--bind-ro=/run/part-image/job/files/probe.service:/etc/systemd/system/probe.service',
      // The probe's own folder is writable in the VM: the probe leaves its report there.
      '--bind=/run/part-image/job/files:/run/probe',
      '--bind-ro=/tmp/px:/x',
      '-b',
    ]);
    expect(nspawnArgsForVm(['-D', '/m', '--', '/bin/true'])).toEqual([`--image=${NSPAWN_VM_DISK}`, '--', '/bin/true']);
  });

  it("adds the probe's report file after nspawn's output only when the console lost the report's end", () => {
    const report = 'PART-IMAGE-PROBE begin\nPART-IMAGE-PROBE state=running\nPART-IMAGE-PROBE end\n';
    const cut = 'Welcome to Debian\r\nPART-IMAGE-PROBE begin\r\n';
    expect(withProbeReport(cut, report)).toBe(`${cut}${report}`);
    expect(withProbeReport('no newline', report)).toBe(`no newline\n${report}`);
    const whole = `x\r\n${report.replace(/\n/g, '\r\n')}Powering off.\r\n`;
    expect(withProbeReport(whole, report)).toBe(whole);
    expect(withProbeReport(cut, undefined)).toBe(cut);
    expect(withProbeReport(cut, 'PART-IMAGE-PROBE begin\n')).toBe(cut);
  });
});
