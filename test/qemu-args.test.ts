// Pure tests of the VM plumbing: qemu's argv, the recipe hash, the results
// channel parser, mmdebstrap's argv, the KVM probe's boot sector, and the
// nspawn argv rewrite for the VM.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildQemuArgs, qemuEscape, type QemuSpec } from '../src/tools/qemu.js';
import { loadRecipe, recipeHash, validateRecipe, type VmRecipe } from '../src/vm/recipe.js';
import { parseResults, vmFailure, jobCmdline, type VmResult } from '../src/vm/run.js';
import { consoleTail } from '../src/boot/console.js';
import { buildMmdebstrapArgs } from '../src/tools/mmdebstrap.js';
import { bootSector } from '../src/vm/kvm.js';
import { nspawnArgsForVm, NSPAWN_VM_DISK, withProbeReport } from '../src/vm/nspawn-in-vm.js';
import { hotplugDiskCommands } from '../src/vm/qmp.js';
import { readyCmdline, stateKey, stateKeyParts, READY_WORD, type MachineShape } from '../src/vm/state.js';
import { filesOfTar, resultsSay } from '../src/vm/job.js';
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
    { path: '/t/job.img', serial: 'pi-job', lun: 0 },
    { path: '/t/img.raw', serial: 'pi-img-0', lun: 1, readOnly: true },
  ],
  serialFiles: ['/t/console.log', '/t/results.log'],
  pidFile: '/t/qemu.pid',
  scsi: true,
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

  it('attaches the root as a virtio disk (snapshot) and the others as SCSI disks at their LUNs of one virtio-scsi controller', () => {
    const args = buildQemuArgs(base);
    expect(values(args, '-drive')).toEqual([
      'file=/c/root.img,format=raw,if=none,id=disk0,cache=unsafe,snapshot=on',
      'file=/t/job.img,format=raw,if=none,id=disk1,cache=unsafe',
      'file=/t/img.raw,format=raw,if=none,id=disk2,cache=unsafe,readonly=on',
    ]);
    expect(values(args, '-device').filter((d) => /^(virtio-blk|virtio-scsi|scsi-hd)/.test(d))).toEqual([
      'virtio-scsi-pci,id=scsi0',
      'virtio-blk-pci,drive=disk0,serial=pi-root',
      'scsi-hd,bus=scsi0.0,scsi-id=0,lun=0,drive=disk1,serial=pi-job',
      'scsi-hd,bus=scsi0.0,scsi-id=0,lun=1,drive=disk2,serial=pi-img-0',
    ]);
  });

  it('refuses a LUN without the SCSI controller, a LUN twice, and a LUN out of range', () => {
    const disks = base.disks;
    expect(() => buildQemuArgs({ ...base, scsi: false })).toThrow(/no SCSI controller/);
    expect(() => buildQemuArgs({ ...base, disks: [disks[0], disks[1], { ...disks[2], lun: 0 }] })).toThrow(/two disks at SCSI LUN 0/);
    expect(() => buildQemuArgs({ ...base, disks: [disks[0], { ...disks[1], lun: 256 }] })).toThrow(/LUN/);
    expect(() => buildQemuArgs({ ...base, disks: [disks[0], { ...disks[1], lun: 1.5 }] })).toThrow(/LUN/);
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
    // runQemu gives qemu the state file as its stdin: no path in the argv, no shell to quote it for.
    expect(values(args, '-incoming')).toEqual(['fd:0']);
    expect(args.join(' ')).not.toContain('vm.state');
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

  it('hot-plugs a disk as a blockdev plus a SCSI disk at its LUN of the controller, with its serial', () => {
    expect(hotplugDiskCommands('hp0', '/t/img.raw', 'pi-img-0', { readOnly: true, lun: 1 })).toEqual([
      ['blockdev-add', { 'node-name': 'hp0', driver: 'raw', 'read-only': true, cache: { 'no-flush': true }, file: { driver: 'file', filename: '/t/img.raw', 'read-only': true } }],
      ['device_add', { driver: 'scsi-hd', bus: 'scsi0.0', 'scsi-id': 0, lun: 1, drive: 'hp0', serial: 'pi-img-0', id: 'dev-hp0' }],
    ]);
    expect(hotplugDiskCommands('hp1', '/t/job.img', 'pi-job', { lun: 0 })[0][1]).toMatchObject({ 'read-only': false });
    expect(() => hotplugDiskCommands('hp2', '/t/x', 'bad serial', { lun: 2 })).toThrow(/serial/);
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
  /** The job's output folder of the tests: two files and an empty one. */
  async function outDir(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'pi-results-'));
    await writeFile(join(dir, 'state'), 'running\n');
    await writeFile(join(dir, 'empty'), '');
    await writeFile(join(dir, 'job.log'), 'line 1\nline 2\n');
    await writeFile(join(dir, `${'long-'.repeat(25)}name`), 'a name of 129 bytes\n');
    return dir;
  }
  const frame = (tarBase64: string) =>
    ['PART-IMAGE-VM begin\r', 'PART-IMAGE-VM at 40.81 mounted', 'PART-IMAGE-VM started\r', 'PART-IMAGE-VM tar', tarBase64, 'PART-IMAGE-VM end-tar', 'PART-IMAGE-VM exit 3', ''].join('\n');
  let gnu: string;
  let runner: string;

  beforeAll(async () => {
    const dir = await outDir();
    // GNU tar, as a job's own tar would be, with a long name (a GNU longname entry).
    gnu = frame(Buffer.from((await execa('tar', ['-C', dir, '-cf', '-', '.'], { encoding: 'buffer' })).stdout).toString('base64'));
    // The runner's own tar and base64 (vm/recipe.json), run by this host's perl.
    const code = (await loadRecipe()).files['/usr/local/lib/part-image/job-runner'].content.join('\n');
    const subs = code.slice(code.indexOf('# A tar (ustar)'), code.indexOf('\nmkdir '));
    expect(subs).toContain('sub base64');
    const script = `use strict; use warnings;\nsub slurp { my ($p) = @_; open(my $f, '<', $p) or return undef; local $/; my $s = <$f>; return $s }\n${subs}\nprint base64(tar_of($ARGV[0]));\n`;
    runner = frame((await execa('perl', ['-e', script, dir])).stdout);
    await rm(dir, { recursive: true, force: true });
  });

  it("decodes the output folder's tar, the start, the guest's marks and the exit status: GNU tar's and the runner's own", () => {
    for (const [stream, long] of [[gnu, true], [runner, false]] as const) {
      const r = parseResults(stream);
      expect(r.started).toBe(true);
      expect(r.exitCode).toBe(3);
      expect(r.guestMarks).toEqual({ mounted: 40.81 });
      expect(r.files.get('state')?.toString()).toBe('running\n');
      expect(r.files.get('empty')?.length).toBe(0);
      expect(r.files.get('job.log')?.toString()).toBe('line 1\nline 2\n');
      // The runner leaves out a name longer than ustar holds; GNU tar keeps it.
      expect(r.files.get(`${'long-'.repeat(25)}name`)?.toString()).toBe(long ? 'a name of 129 bytes\n' : undefined);
      expect(r.errors).toEqual([]);
    }
  });

  it('keeps nothing of a tar cut off, nor of one whose header checksum is wrong', () => {
    for (const stream of [gnu, runner]) {
      const cut = stream.slice(0, stream.indexOf('PART-IMAGE-VM tar') + 400);
      const r = parseResults(cut);
      expect(r.exitCode).toBeUndefined();
      expect(r.files.size).toBe(0);
      const tar = Buffer.from(stream.split('\n')[4], 'base64');
      tar[0] ^= 1;
      expect(filesOfTar(tar).size).toBe(0);
    }
  });

  it('leaves out a file whose data the tar does not hold whole', () => {
    const tar = Buffer.from(runner.split('\n')[4], 'base64');
    // Entries: empty (header), job.log (header + 1 block), state: cut inside job.log's data block.
    expect([...filesOfTar(tar.subarray(0, 512 + 512 + 10)).keys()]).toEqual(['empty']);
  });

  it("encodes base64 as Buffer does, padding and all (the runner's own code)", async () => {
    const code = (await loadRecipe()).files['/usr/local/lib/part-image/job-runner'].content.join('\n');
    const subs = code.slice(code.indexOf('# Base64 from'), code.indexOf('\nmkdir '));
    const samples = ['', 'a', 'ab', 'abc', 'abcd', 'abcde', '\u00ff\u00fe\u0000', 'x'.repeat(45), 'y'.repeat(46), 'z'.repeat(100)];
    for (const sample of samples) {
      const bytes = Buffer.from(sample, 'latin1');
      const r = await execa('perl', ['-e', `${subs}\nbinmode STDIN; local $/; my $s = <STDIN> // ''; print base64($s);`], { input: bytes, stripFinalNewline: false });
      expect(r.stdout, JSON.stringify(sample)).toBe(bytes.toString('base64'));
    }
  });

  it('reads the entries of a tar up to a damaged one', () => {
    const tar = Buffer.from(runner.split('\n')[4], 'base64');
    // The second entry's header: the first file (empty) is one header block.
    tar[512 + 148] = 0x31;
    expect([...filesOfTar(tar).keys()]).toEqual(['empty']);
  });

  it('reports runner errors', () => {
    expect(parseResults('PART-IMAGE-VM begin\nPART-IMAGE-VM error no job disk\n').errors).toEqual(['no job disk']);
  });

  const failed = (over: Partial<VmResult>): VmResult => ({
    started: false, files: new Map(), errors: [], accel: 'tcg', timedOut: false, qemuExitCode: 0, qemuStderr: '',
    console: '[    1.0] Linux version 6.1\n\x1b[0;32m  OK  \x1b[0m] Reached target x\n', jobLog: '', durationMs: 1, boot: 'cold', phases: {}, guestMarks: {}, ...over,
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
