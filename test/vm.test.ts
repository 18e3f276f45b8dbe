// Real VM tests: the root image is built (or found in the cache), the VM
// boots under whatever detectAccel() picks (TCG on this project's CI), a job
// runs, its results come back over ttyS1, and a VM that overruns its time
// limit is killed. Nothing here is skipped: without qemu, mmdebstrap or a
// Debian mirror these tests fail.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, copyFile, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Scope } from '../src/cleanup.js';
import { readInput } from '../src/input/index.js';
import { buildRawImage } from '../src/build/index.js';
import { ensureVmImage, vmCacheRoot, type VmImage } from '../src/vm/image.js';
import { detectAccel, probeBootSector, probeKernel, resetAccelMemo } from '../src/vm/kvm.js';
import { runVm, vmFailure } from '../src/vm/run.js';
import { runNspawnInVm } from '../src/vm/nspawn-in-vm.js';

const VM_TEST_MS = 400_000;

let scope: Scope;
let work: string;
let image: VmImage;
let busyboxImage: string;

/** A busybox-only tree with an os-release, built into an ext4 image by part-image's builder. */
async function busyboxRaw(dir: string, name: string): Promise<string> {
  const root = join(dir, `${name}.d`);
  for (const d of ['usr/bin', 'etc', 'proc', 'sys', 'dev', 'run', 'tmp', 'var/tmp']) await mkdir(join(root, d), { recursive: true });
  await copyFile('/usr/bin/busybox', join(root, 'usr/bin/busybox'));
  await chmod(join(root, 'usr/bin/busybox'), 0o755);
  await writeFile(join(root, 'etc/os-release'), 'ID=vmtest\nNAME="VM test"\n');
  const tree = await readInput(root, scope);
  const out = join(dir, `${name}.raw`);
  await buildRawImage(tree, out, { label: name, freeMb: 4, usedMb: tree.usedMb }, scope);
  return out;
}

function gone(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

beforeAll(async () => {
  scope = new Scope();
  work = await scope.tempDir('part-image-vm-test-');
  const t = Date.now();
  image = await ensureVmImage();
  console.log(`VM image: ${image.built ? 'built' : 'cache hit'} in ${Date.now() - t} ms (${image.dir})`);
  busyboxImage = await busyboxRaw(work, 'bb');
}, 1_800_000);

afterAll(async () => {
  await scope?.close();
});

describe('VM root image', () => {
  it('is cached: a second call costs nothing', async () => {
    const t = performance.now();
    const again = await ensureVmImage();
    const ms = performance.now() - t;
    console.log(`VM image cache hit: ${ms.toFixed(1)} ms`);
    expect(again.built).toBe(false);
    expect(again.root).toBe(image.root);
    expect(ms).toBeLessThan(200);
    expect(image.kernelVersion).toMatch(/cloud-amd64$/);
  });
});

describe('accelerator', () => {
  it('picks an accelerator once and remembers it', async () => {
    resetAccelMemo();
    const first = await detectAccel(image.kernel);
    expect(['kvm', 'tcg']).toContain(first.accel);
    expect(first.reason).not.toBe('');
    const t = performance.now();
    const second = await detectAccel(image.kernel);
    expect(second).toEqual(first);
    expect(performance.now() - t).toBeLessThan(50);
    // Stored on disk as well: a fresh process (a cleared memo) does not probe again.
    resetAccelMemo();
    const t2 = performance.now();
    expect((await detectAccel(image.kernel)).accel).toBe(first.accel);
    expect(performance.now() - t2).toBeLessThan(1000);
    if (!process.env.PART_IMAGE_ACCEL && !first.reason.startsWith('/dev/kvm')) {
      expect((await readdir(vmCacheRoot())).some((f) => /^accel-[0-9a-f]{16}\.json$/.test(f))).toBe(true);
    }
  });

  it('has probes that pass on a working accelerator (checked under TCG, which always works)', async () => {
    const t = Date.now();
    expect(await probeBootSector('tcg')).toBeUndefined();
    expect(await probeKernel(image.kernel, 'tcg')).toBeUndefined();
    console.log(`boot-sector + kernel probe under TCG: ${Date.now() - t} ms`);
  }, 60_000);
});

describe('runVm', () => {
  it('boots, runs the job as root under systemd with the disks attached, and brings the results back', async () => {
    const r = await runVm({
      image,
      scope,
      timeoutMs: 300_000,
      scratchMb: 32,
      disks: [{ path: busyboxImage, serial: 'pi-img-0' }],
      files: { 'greeting.txt': 'hello from the host\n' },
      script: [
        'id -u > "$PI_OUT/uid"',
        'cat /proc/1/comm > "$PI_OUT/pid1"',
        'cat "$PI_JOB/files/greeting.txt" > "$PI_OUT/greeting"',
        // the disk under test: read-only, an ext4 with our label
        'blkid -o value -s LABEL /dev/disk/by-id/virtio-pi-img-0 > "$PI_OUT/label"',
        'blockdev --getro /dev/disk/by-id/virtio-pi-img-0 > "$PI_OUT/ro"',
        'findmnt -n -o SOURCE,FSTYPE /var/tmp > "$PI_OUT/scratch"',
        'systemctl is-active serial-getty@ttyS0.service > "$PI_OUT/getty" 2>&1',
        'printf "\\000\\001\\377binary" > "$PI_OUT/binary"',
        'echo to-the-log',
        'exit 3',
      ].join('\n'),
    });
    console.log(`runVm (${r.accel}): ${r.durationMs} ms`);
    expect(vmFailure(r, 300_000)).toBeUndefined();
    expect(r.timedOut).toBe(false);
    expect(r.started).toBe(true);
    expect(r.exitCode).toBe(3);
    const f = (n: string) => r.files.get(n)?.toString();
    expect(f('uid')).toBe('0\n');
    expect(f('pid1')).toBe('systemd\n');
    expect(f('greeting')).toBe('hello from the host\n');
    expect(f('label')).toBe('bb\n');
    expect(f('ro')).toBe('1\n');
    expect(f('scratch')).toMatch(/^\/dev\/vd\w+ ext4$/m);
    expect(f('getty')).toMatch(/inactive|masked/);
    expect(r.files.get('binary')).toEqual(Buffer.from([0, 1, 255, ...Buffer.from('binary')]));
    expect(r.jobLog).toContain('to-the-log');
    expect(r.console).toMatch(/Reached target .*multi-user\.target/);
    expect(r.console).toMatch(/reboot: Power down/);
    expect(gone(r.qemuPid)).toBe(true);
  }, VM_TEST_MS);

  it('kills a VM that overruns its time limit, and says where it was', async () => {
    const t = Date.now();
    const r = await runVm({ image, scope, timeoutMs: 8_000, script: 'sleep 600' });
    const ms = Date.now() - t;
    console.log(`runVm timeout: ${ms} ms`);
    expect(r.timedOut).toBe(true);
    expect(r.exitCode).toBeUndefined();
    expect(vmFailure(r, 8_000)).toMatch(/killed after 8 s/);
    expect(ms).toBeLessThan(20_000);
    expect(gone(r.qemuPid)).toBe(true);
  }, VM_TEST_MS);
});

describe('systemd-nspawn in the VM', () => {
  it('runs nspawn --image on the image and returns its status and output', async () => {
    const probeDir = join(work, 'probe');
    await mkdir(probeDir, { recursive: true });
    await writeFile(join(probeDir, 'say.sh'), 'echo probe-file-seen\n');
    const r = await runNspawnInVm({
      image: busyboxImage,
      args: [
        '--quiet', '--directory=/nowhere', '--register=no', '--keep-unit', '--volatile=overlay',
        '--resolv-conf=off', '--timezone=off', `--bind-ro=${probeDir}:/probe`, '--console=pipe',
        '--', '/usr/bin/busybox', 'sh', '-c', 'sh /probe/say.sh; . /etc/os-release; echo "id=$ID"; exit 7',
      ],
      hostDir: probeDir,
      timeoutMs: 60_000,
      scope,
    });
    console.log(`nspawn in VM (${r.vm.accel}): ${r.vm.durationMs} ms`);
    expect(r.vmError).toBeUndefined();
    expect(r.exitCode).toBe(7);
    expect(r.timedOut).toBe(false);
    expect(r.stdout).toBe('probe-file-seen\nid=vmtest\n');
  }, VM_TEST_MS);
});
