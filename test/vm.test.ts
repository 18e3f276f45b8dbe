// Real VM tests: the root image is built (or found in the cache), the VM
// boots under whatever detectAccel() picks (TCG on this project's CI), a job
// runs, its results come back over ttyS1, and a VM that overruns its time
// limit is killed. Nothing here is skipped: without qemu, mmdebstrap or a
// Debian mirror these tests fail.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, copyFile, mkdir, open, readdir, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Scope } from '../src/cleanup.js';
import { readInput } from '../src/input/index.js';
import { buildRawImage } from '../src/build/index.js';
import { ensureVmImage, vmCacheRoot, type VmImage } from '../src/vm/image.js';
import { acquireVmLock, HEARTBEAT_STALE_MS, lockOwnerSelf, type LockOwner } from '../src/vm/lock.js';
import { loadRecipe, recipeHash } from '../src/vm/recipe.js';
import { CLI } from './helpers/cli.js';
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { readFile, utimes } from 'node:fs/promises';
import { dirname } from 'node:path';
import { detectAccel, probeBootSector, probeKernel, resetAccelMemo } from '../src/vm/kvm.js';
import { guestDisk, runVm, vmFailure, type VmResult } from '../src/vm/run.js';
import { consoleTail } from '../src/boot/console.js';
import { runNspawnInVm } from '../src/vm/nspawn-in-vm.js';
import { hostBusybox } from './helpers/busybox.js';

const VM_TEST_MS = 400_000;

let scope: Scope;
let work: string;
let image: VmImage;
let busyboxImage: string;

/** A busybox-only tree with an os-release, built into an ext4 image by part-image's builder. */
async function busyboxRaw(dir: string, name: string): Promise<string> {
  const root = join(dir, `${name}.d`);
  for (const d of ['usr/bin', 'etc', 'proc', 'sys', 'dev', 'run', 'tmp', 'var/tmp']) await mkdir(join(root, d), { recursive: true });
  await copyFile(hostBusybox(), join(root, 'usr/bin/busybox'));
  await chmod(join(root, 'usr/bin/busybox'), 0o755);
  await writeFile(join(root, 'etc/os-release'), 'ID=vmtest\nNAME="VM test"\n');
  const tree = await readInput(root, scope);
  const out = join(dir, `${name}.raw`);
  await buildRawImage(tree, out, { label: name, freeMb: 4, usedMb: tree.usedMb }, scope);
  return out;
}

/** Identity and last change of a file: equal snapshots mean the file was not rewritten. */
async function fileId(path: string): Promise<{ ino: number; mtimeMs: number; size: number }> {
  const s = await stat(path);
  return { ino: s.ino, mtimeMs: s.mtimeMs, size: s.size };
}

/** The stored accelerator verdicts, each with its identity: a new probe rewrites (renames over) its file. */
async function accelVerdicts(): Promise<Record<string, { ino: number; mtimeMs: number; size: number }>> {
  const names = (await readdir(vmCacheRoot()).catch(() => [] as string[])).filter((f) => /^accel-[0-9a-f]{16}\.json$/.test(f)).sort();
  return Object.fromEntries(await Promise.all(names.map(async (n) => [n, await fileId(join(vmCacheRoot(), n))] as const)));
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
  it('is cached: a second call builds nothing', async () => {
    const before = await Promise.all([image.root, image.kernel, image.initrd].map(fileId));
    const t = performance.now();
    const again = await ensureVmImage();
    console.log(`VM image cache hit: ${(performance.now() - t).toFixed(1)} ms`);
    expect(again.built).toBe(false);
    expect(again.root).toBe(image.root);
    // The cached files are the same files, untouched: not rebuilt, not rewritten.
    expect(await Promise.all([again.root, again.kernel, again.initrd].map(fileId))).toEqual(before);
    expect(image.kernelVersion).toMatch(/cloud-amd64$/);
  });
});

describe('accelerator', () => {
  it('picks an accelerator once and remembers it', async () => {
    resetAccelMemo();
    const first = await detectAccel(image.kernel);
    expect(['kvm', 'tcg']).toContain(first.accel);
    expect(first.reason).not.toBe('');
    const second = await detectAccel(image.kernel);
    expect(second).toEqual(first);
    // Remembered in memory: the very same verdict object, not a new decision.
    if (!process.env.PART_IMAGE_ACCEL) expect(second).toBe(first);
    // Stored on disk as well: a fresh process (a cleared memo) does not probe
    // again. A probe would store its verdict anew (a new file renamed over the
    // old one); the stored verdicts stay the same files.
    const stored = await accelVerdicts();
    resetAccelMemo();
    const t = performance.now();
    expect((await detectAccel(image.kernel)).accel).toBe(first.accel);
    console.log(`accelerator verdict after a cleared memo: ${(performance.now() - t).toFixed(1)} ms`);
    expect(await accelVerdicts()).toEqual(stored);
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
  let sparseFile: string;
  let sparseSha256: string;
  let sparseLink: string;
  beforeAll(async () => {
    // 64 MiB with 1 MiB of data in its middle.
    sparseFile = join(work, 'sparse.raw');
    await writeFile(sparseFile, '');
    await truncate(sparseFile, 64 * 1024 * 1024);
    const fh = await open(sparseFile, 'r+');
    await fh.write(Buffer.alloc(1024 * 1024, 0xab), 0, 1024 * 1024, 32 * 1024 * 1024);
    await fh.close();
    sparseSha256 = createHash('sha256').update(await readFile(sparseFile)).digest('hex');
    // Named through a symlink, as `latest.raw -> demo_1.0.raw` would be: the job gets the file.
    sparseLink = join(work, 'sparse-link.raw');
    await symlink(sparseFile, sparseLink);
  });
  const script = [
    'id -u > "$PI_OUT/uid"',
    'cat /proc/1/comm > "$PI_OUT/pid1"',
    'cat "$PI_JOB/files/greeting.txt" > "$PI_OUT/greeting"',
    // the disk under test: read-only, an ext4 with our label, where guestDisk() says
    `blkid -o value -s LABEL ${guestDisk('pi-img-0')} > "$PI_OUT/label"`,
    `blockdev --getro ${guestDisk('pi-img-0')} > "$PI_OUT/ro"`,
    // the scratch room: a folder of the job disk, bound on /var/tmp, with the room asked for
    'findmnt -n -o SOURCE,FSTYPE /var/tmp > "$PI_OUT/scratch"',
    'df -P -k /var/tmp | tail -1 > "$PI_OUT/df"',
    // a host file in place: the same bytes, its holes kept
    'sha256sum < "$PI_JOB/files/sparse.raw" | cut -d " " -f 1 > "$PI_OUT/sparse.sha256"',
    'stat -c "%s %b" "$PI_JOB/files/sparse.raw" > "$PI_OUT/sparse.stat"',
    'systemctl is-active serial-getty@ttyS0.service > "$PI_OUT/getty" 2>&1',
    'systemctl is-active systemd-portabled.service > "$PI_OUT/portabled" 2>&1',
    'cat /proc/sys/kernel/random/uuid > "$PI_OUT/uuid"',
    'date +%s > "$PI_OUT/date"',
    'printf "\\000\\001\\377binary" > "$PI_OUT/binary"',
    'echo to-the-log',
    'exit 3',
  ].join('\n');
  const job = () => ({
    image,
    scope,
    timeoutMs: 300_000,
    scratchMb: 32,
    disks: [{ path: busyboxImage, serial: 'pi-img-0' }],
    files: { 'greeting.txt': 'hello from the host\n' },
    hostFiles: { 'sparse.raw': sparseLink },
    script,
  });
  const f = (r: VmResult, n: string) => r.files.get(n)?.toString();
  function expectJobRan(r: VmResult, hostStart: number) {
    expect(vmFailure(r, 300_000), consoleTail(r.console, 60).join('\n')).toBeUndefined();
    expect(r.timedOut).toBe(false);
    expect(r.started).toBe(true);
    expect(r.exitCode).toBe(3);
    expect(f(r, 'uid')).toBe('0\n');
    expect(f(r, 'pid1')).toBe('systemd\n');
    expect(f(r, 'greeting')).toBe('hello from the host\n');
    expect(f(r, 'label')).toBe('bb\n');
    expect(f(r, 'ro')).toBe('1\n');
    expect(f(r, 'scratch')).toMatch(/^\/dev\/sd[a-z]+\[\/scratch\] ext4$/m);
    expect(Number(f(r, 'df')?.split(/\s+/)[3])).toBeGreaterThanOrEqual(32 * 1024);
    expect(f(r, 'sparse.sha256')).toBe(`${sparseSha256}\n`);
    const [size, blocks] = (f(r, 'sparse.stat') ?? '').trim().split(' ').map(Number);
    expect(size).toBe(64 * 1024 * 1024);
    // 1 MiB of data in 64 MiB: the job disk kept the holes.
    expect(blocks * 512).toBeLessThan(4 * 1024 * 1024);
    expect(Object.keys(r.guestMarks)).toEqual(expect.arrayContaining(['mounted', 'disks', 'ended']));
    expect(f(r, 'getty')).toMatch(/inactive|masked/);
    expect(r.files.get('binary')).toEqual(Buffer.from([0, 1, 255, ...Buffer.from('binary')]));
    expect(r.jobLog).toContain('to-the-log');
    // The guest's clock is the host's (a restored VM would otherwise live at the time it was saved).
    const guestNow = Number(f(r, 'date'));
    expect(guestNow).toBeGreaterThanOrEqual(Math.floor(hostStart / 1000) - 2);
    expect(guestNow).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000) + 2);
    expect(gone(r.qemuPid)).toBe(true);
  }

  it('restores the saved VM, hot-plugs the disks, runs the job as root under systemd, and brings the results back', async () => {
    const t = Date.now();
    const r = await runVm(job());
    console.log(`runVm (${r.accel}, ${r.boot}): ${r.durationMs} ms; phases ${JSON.stringify(r.phases)}`);
    expect(r.boot).toBe('restore');
    expectJobRan(r, t);
    // portabled was started before the save: the job finds it running.
    expect(f(r, 'portabled')).toBe('active\n');
    expect(Object.keys(r.phases)).toEqual(expect.arrayContaining(['restored', 'prepared', 'attached', 'begin', 'started', 'exit']));
    // The restored guest was given the host's seed and time before the job started.
    expect(r.guestMarks.reseeded).toBeGreaterThanOrEqual(r.guestMarks.mounted);
    expect(r.errors).toEqual([]);
  }, VM_TEST_MS);

  it('runs two restores of one state side by side, each on its own overlay, with its own randomness', async () => {
    const t = Date.now();
    const [a, b] = await Promise.all([runVm(job()), runVm(job())]);
    console.log(`two restores side by side: ${a.durationMs} ms and ${b.durationMs} ms`);
    for (const r of [a, b]) {
      expect(r.boot).toBe('restore');
      expectJobRan(r, t);
    }
    // Reseeded after the restore: the two copies of one saved generator part ways.
    expect(f(a, 'uuid')).toMatch(/^[0-9a-f-]{36}\n$/);
    expect(f(a, 'uuid')).not.toBe(f(b, 'uuid'));
  }, VM_TEST_MS);

  it('boots the VM cold when asked (the fallback), with the same results', async () => {
    const t = Date.now();
    const r = await runVm({ ...job(), boot: 'cold' });
    console.log(`runVm (${r.accel}, cold): ${r.durationMs} ms`);
    expect(r.boot).toBe('cold');
    expectJobRan(r, t);
    expect(r.console).toMatch(/Reached target .*basic\.target/);
    expect(r.console).toMatch(/reboot: Power down/);
  }, VM_TEST_MS);

  it('kills a VM that overruns its time limit, and says where it was', async () => {
    const t = Date.now();
    // The job's own limit inside the guest is longer than the host's: the host must kill it.
    const r = await runVm({ image, scope, timeoutMs: 8_000, jobTimeoutMs: 600_000, script: 'sleep 600' });
    const ms = Date.now() - t;
    console.log(`runVm timeout: ${ms} ms`);
    expect(r.timedOut).toBe(true);
    expect(r.exitCode).toBeUndefined();
    expect(vmFailure(r, 8_000)).toMatch(/killed after 8 s/);
    // Killed at its limit, not left running until the job ends (600 s): a
    // generous bound for the start and teardown on a loaded machine.
    expect(ms).toBeLessThan(8_000 + 60_000);
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

describe('the VM image build lock', () => {
  /** A lock directory as a part-image with `owner` leaves it. */
  async function fakeLock(lock: string, owner: LockOwner): Promise<void> {
    await mkdir(lock, { recursive: true });
    await writeFile(join(lock, 'owner.json'), `${JSON.stringify(owner)}\n`);
  }

  async function deadPid(): Promise<number> {
    const child = execa('true');
    await child;
    expect(gone(child.pid)).toBe(true);
    return child.pid!;
  }

  it('takes over at once a lock whose owner no longer exists, or whose pid was reused', async () => {
    const dir = join(work, 'locks-dead');
    await mkdir(dir, { recursive: true });
    const self = await lockOwnerSelf();
    for (const [name, owner] of [
      ['dead', { ...self, pid: await deadPid(), token: 'dead' }],
      // A live pid (ours) that started at another time: a killed owner's pid, reused.
      ['reused', { ...self, token: 'reused', startTime: '1' }],
      // An older part-image's lock: a bare pid file.
      ['legacy', undefined],
    ] as const) {
      const lock = join(dir, `${name}.lock`);
      if (owner) await fakeLock(lock, owner);
      else {
        await mkdir(lock);
        await writeFile(join(lock, 'pid'), String(await deadPid()));
      }
      const s = new Scope();
      const t = Date.now();
      const got = await acquireVmLock(lock, s, async () => false, 5_000);
      // Under the 5 s wait limit given above: a takeover, not a wait that ran out.
      expect(Date.now() - t, name).toBeLessThan(4_500);
      expect(got?.owner.pid).toBe(process.pid);
      expect(JSON.parse(await readFile(join(lock, 'owner.json'), 'utf8'))).toMatchObject({ pid: process.pid, token: got!.owner.token });
      await s.close();
      expect(existsSync(lock), `${name}: released when its scope closed`).toBe(false);
    }
    // Nothing left beside the locks: no half-made or broken lock directories.
    expect(await readdir(dir)).toEqual([]);
  });

  it('waits for a live owner it cannot check (another PID namespace) while it touches the lock, and takes over when it stops', async () => {
    const dir = join(work, 'locks-foreign');
    await mkdir(dir, { recursive: true });
    const self = await lockOwnerSelf();
    const lock = join(dir, 'vm.lock');
    const foreign: LockOwner = { ...self, pid: 1, token: 'foreign', host: 'other-container', pidNs: 'pid:[1]' };
    await fakeLock(lock, foreign);
    // Fresh heartbeat: waited for, until the image is there (done() says so); the lock is not ours to remove.
    const s = new Scope();
    let asked = 0;
    expect(await acquireVmLock(lock, s, async () => ++asked >= 2, 60_000)).toBeUndefined();
    expect(asked).toBe(2);
    await s.close();
    expect(JSON.parse(await readFile(join(lock, 'owner.json'), 'utf8')).token).toBe('foreign');
    // Fresh heartbeat and no image: the wait ends with a clear error after its limit.
    const s2 = new Scope();
    await expect(acquireVmLock(lock, s2, async () => false, 1_500)).rejects.toThrow(/waited 0 min for another part-image \(pid 1 on other-container\) to build the VM image/);
    await s2.close();
    expect(existsSync(lock)).toBe(true);
    // The heartbeat stopped long ago: taken over.
    const old = new Date(Date.now() - HEARTBEAT_STALE_MS - 60_000);
    await utimes(join(lock, 'owner.json'), old, old);
    const s3 = new Scope();
    const got = await acquireVmLock(lock, s3, async () => false, 5_000);
    expect(got?.owner.pid).toBe(process.pid);
    await s3.close();
    expect(await readdir(dir)).toEqual([]);
  }, 30_000);

  it('a failed VM image build after a killed one: the stale lock is taken over, and no build directory or lock is left', async () => {
    const cache = join(work, 'cache-failed');
    const bin = join(work, 'bin-failing-mmdebstrap');
    await mkdir(cache, { recursive: true });
    await mkdir(bin, { recursive: true });
    await writeFile(join(bin, 'mmdebstrap'), '#!/bin/sh\necho "E: no mirror in this test" >&2\nexit 1\n');
    await chmod(join(bin, 'mmdebstrap'), 0o755);
    const hash = recipeHash(await loadRecipe());
    // What a SIGKILLed build leaves: its build directory and its lock.
    await mkdir(join(cache, `vm-${hash}.build-${await deadPid()}`, 'overlay'), { recursive: true });
    await fakeLock(join(cache, `vm-${hash}.lock`), { ...(await lockOwnerSelf()), pid: await deadPid() });
    const saved = { cache: process.env.PART_IMAGE_CACHE, path: process.env.PATH };
    process.env.PART_IMAGE_CACHE = cache;
    process.env.PATH = `${bin}:${saved.path}`;
    try {
      const t = Date.now();
      await expect(ensureVmImage()).rejects.toThrow(/cannot build the VM root image: .*no mirror in this test/s);
      // Far under the lock wait limit: the stale lock did not make it wait.
      expect(Date.now() - t).toBeLessThan(60_000);
    } finally {
      process.env.PATH = saved.path;
      if (saved.cache === undefined) delete process.env.PART_IMAGE_CACHE;
      else process.env.PART_IMAGE_CACHE = saved.cache;
    }
    expect(await readdir(cache)).toEqual([]);
  }, 60_000);

  it('an interrupted VM image build (SIGTERM) leaves no build directory, no lock and no mmdebstrap behind', async () => {
    const cache = join(work, 'cache-interrupted');
    const bin = join(work, 'bin-slow-mmdebstrap');
    await mkdir(cache, { recursive: true });
    await mkdir(bin, { recursive: true });
    // Writes part of its tar, notes its pid, then takes its time.
    await writeFile(join(bin, 'mmdebstrap'), [
      '#!/bin/sh',
      'for a; do case "$a" in */root.tar) head -c 1048576 /dev/zero > "$a" ;; esac; done',
      'echo $$ > "$PI_TEST_PIDFILE"',
      'exec sleep 600',
      '',
    ].join('\n'));
    await chmod(join(bin, 'mmdebstrap'), 0o755);
    const pidFile = join(work, 'slow-mmdebstrap.pid');
    // The CLI's signal handling, around ensureVmImage() alone.
    const dist = dirname(CLI);
    const script = [
      `import { ensureVmImage } from ${JSON.stringify(join(dist, 'vm/image.js'))};`,
      `import { shutdown } from ${JSON.stringify(join(dist, 'cleanup.js'))};`,
      'let interrupted = false;',
      "process.on('SIGTERM', () => { interrupted = true; void shutdown().finally(() => process.exit(130)); });",
      // As cli.ts: the work cut short settles, and does not exit before the cleanup is done.
      'ensureVmImage().then(() => interrupted || process.exit(0), (e) => interrupted || (console.error(e), process.exit(1)));',
    ].join('\n');
    const child = execa('node', ['--input-type=module', '-e', script], {
      reject: false,
      env: { PART_IMAGE_CACHE: cache, PATH: `${bin}:${process.env.PATH}`, PI_TEST_PIDFILE: pidFile },
    });
    let mmdebstrapPid = 0;
    for (let i = 0; i < 600 && !mmdebstrapPid; i++) {
      mmdebstrapPid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
      if (!mmdebstrapPid) await new Promise((r) => setTimeout(r, 100));
    }
    expect(mmdebstrapPid, 'the fake mmdebstrap never started').toBeGreaterThan(0);
    const during = await readdir(cache);
    expect(during.some((n) => /^vm-[0-9a-f]+\.build-\d+$/.test(n))).toBe(true);
    expect(during.some((n) => /^vm-[0-9a-f]+\.lock$/.test(n))).toBe(true);
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode, r.stderr).toBe(130);
    expect(await readdir(cache)).toEqual([]);
    for (let i = 0; i < 100 && !gone(mmdebstrapPid); i++) await new Promise((res) => setTimeout(res, 100));
    expect(gone(mmdebstrapPid)).toBe(true);
  }, 60_000);
});
