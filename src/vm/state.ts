// The saved state of a booted part-image VM, so that a job restores a VM in
// a second or two instead of booting one (20-30 s under TCG).
//
//   <cache>/vm-<recipe hash>/state-<key>/{vm.state, disk.qcow2, meta.json, boot.log}
//
// It is made once: the VM (with its virtio-scsi controller, where each restore
// plugs its disks) boots with part_image.ready on its command line;
// the guest's runner starts what the jobs need (portabled, the loop module),
// waits until systemd has no job left but its own, and says "ready" on ttyS1;
// the host then stops the CPU and migrates the VM to vm.state (QMP `stop`,
// `migrate "exec:cat > vm.state"`). The root's writes of that boot are in
// disk.qcow2, an overlay of root.img: the disk as the saved memory knows it.
// Each restore opens disk.qcow2 with snapshot=on (its own throw-away overlay),
// so restores of one state run side by side and never change it.
//
// The key is everything the state cannot outlive: the recipe hash (the
// image), the qemu version, machine type, CPU model, accelerator, memory and
// CPU count, and the kernel command line. A state is checked like the image
// (sizes always, sha256 after a change); a damaged one, or one that does not
// restore, is removed and saved anew (restore.ts, run.ts).
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { withScope, type Scope } from '../cleanup.js';
import { EnvironmentError } from '../errors.js';
import { shellQuote } from '../exec.js';
import { log } from '../log.js';
import { runQemu, MACHINE, type Accel, type QemuSpec } from '../tools/qemu.js';
import { qemuImgOverlay } from '../tools/qemu-img.js';
import { sha256Of, statKey, writeJsonAtomic, type FileSum, type VmImage } from './cache.js';
import { acquireVmLock } from './lock.js';
import { JOB_UNIT, resultsSay } from './job.js';
import { Qmp } from './qmp.js';
import { FileTail, pollUntil, sleep } from './watch.js';

/** Bumped when the way a state is made changes, so that older states are not restored. */
export const STATE_VERSION = 2;
/** The kernel command-line word that makes the runner get the VM ready to be saved. */
export const READY_WORD = 'part_image.ready';
const STATE_FILES = ['vm.state', 'disk.qcow2'] as const;

export interface MachineShape {
  accel: Accel;
  cpu: string;
  memoryMb: number;
  cpus: number;
}

export interface SavedState {
  key: string;
  dir: string;
  /** The migration stream. */
  state: string;
  /** The root as the saved guest left it: an overlay of root.img. */
  disk: string;
  /** Made by this call (false: found in the cache). */
  built: boolean;
}

interface StateMeta {
  key: string;
  parts: unknown[];
  savedAt: string;
  bootMs: number;
  saveMs: number;
  files: Record<string, FileSum>;
}

/** The kernel command line of the VM that is booted to be saved (and so of every restore of it). */
export function readyCmdline(image: VmImage): string[] {
  return [...image.recipe.kernelCmdline, `systemd.wants=${JOB_UNIT}`, READY_WORD];
}

/** What the key is made of. Pure. */
export function stateKeyParts(image: VmImage, shape: MachineShape, qemuVersion: string): unknown[] {
  return [STATE_VERSION, image.hash, qemuVersion, MACHINE, shape.cpu, shape.accel, shape.memoryMb, shape.cpus, readyCmdline(image)];
}

/** The cache key of a saved state: 16 hex digits. Pure. */
export function stateKey(parts: unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16);
}

export function stateDir(image: VmImage, key: string): string {
  return join(image.dir, `state-${key}`);
}

export type StateCheck = { state: 'missing' } | { state: 'damaged'; why: string } | { state: 'ok'; saved: SavedState };

/** The saved state in `dir`, checked: sizes always, sha256 when a file changed since it was last found right. */
export async function checkState(dir: string, key: string): Promise<StateCheck> {
  let meta: StateMeta;
  try {
    meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as StateMeta;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'missing' };
    return { state: 'damaged', why: `meta.json cannot be read: ${(err as Error).message}` };
  }
  if (meta.key !== key) return { state: 'damaged', why: `meta.json names the key ${meta.key}, not ${key}` };
  try {
    const checkedFile = join(dir, 'checked.json');
    const checked = (JSON.parse(await readFile(checkedFile, 'utf8').catch(() => '{}')) ?? {}) as Record<string, string>;
    let changed = false;
    for (const name of STATE_FILES) {
      const want = meta.files?.[name];
      if (!want) return { state: 'damaged', why: `meta.json records no sha256 for ${name}` };
      const st = await stat(join(dir, name));
      if (st.size !== want.size) return { state: 'damaged', why: `${name} is ${st.size} bytes, but was saved with ${want.size}` };
      if (checked[name] === statKey(st)) continue;
      const got = await sha256Of(join(dir, name));
      if (got !== want.sha256) return { state: 'damaged', why: `${name} has sha256 ${got.slice(0, 12)}..., but was saved with ${want.sha256.slice(0, 12)}...` };
      checked[name] = statKey(st);
      changed = true;
    }
    if (changed) await writeJsonAtomic(checkedFile, checked).catch(() => undefined);
  } catch (err) {
    return { state: 'damaged', why: (err as Error).message };
  }
  return { state: 'ok', saved: { key, dir, state: join(dir, 'vm.state'), disk: join(dir, 'disk.qcow2'), built: false } };
}

/** Removes a saved state (damaged, or it did not restore); restores running from it keep their open files. */
export async function dropState(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export interface EnsureStateOptions {
  image: VmImage;
  shape: MachineShape;
  qemuVersion: string;
  scope: Scope;
  /** The qemu spec of the VM minus what a run changes (disks, serial files, QMP socket, pid file). */
  spec: Omit<QemuSpec, 'disks' | 'serialFiles' | 'qmpSocket' | 'pidFile' | 'append'>;
}

const READY_BOOT_MS = 600_000;
const SAVE_MS = 180_000;

/** The saved state for this image and machine: from the cache, or booted and saved now (once, under the cache lock). */
export async function ensureState(o: EnsureStateOptions): Promise<SavedState> {
  const parts = stateKeyParts(o.image, o.shape, o.qemuVersion);
  const key = stateKey(parts);
  const dir = stateDir(o.image, key);
  const first = await checkState(dir, key);
  if (first.state === 'ok') return first.saved;
  if (first.state === 'damaged') {
    log.info(`VM: the saved VM state ${dir} is damaged (${first.why}): saving a new one`);
    await dropState(dir);
  }
  const found = await withScope(async (scope) => {
    const isOk = async () => (await checkState(dir, key)).state === 'ok';
    const lock = await acquireVmLock(`${dir}.lock`, scope, isOk, undefined, 'the saved VM state');
    const again = await checkState(dir, key);
    if (again.state === 'ok' || !lock) return again.state === 'ok' ? again.saved : undefined;
    // With the lock held: what an interrupted save left.
    for (const name of await readdir(dirname(dir)).catch(() => [] as string[])) {
      if (name.startsWith(`${basename(dir)}.build-`)) await rm(join(dirname(dir), name), { recursive: true, force: true });
    }
    await saveState(o, parts, key, dir, scope);
    return undefined;
  });
  if (found) return found;
  const made = await checkState(dir, key);
  if (made.state !== 'ok') throw new EnvironmentError(`the saved VM state in ${dir} is ${made.state} right after it was saved`);
  return { ...made.saved, built: true };
}

async function saveState(o: EnsureStateOptions, parts: unknown[], key: string, dir: string, outer: Scope): Promise<void> {
  const started = Date.now();
  const work = `${dir}.build-${process.pid}`;
  outer.defer(`remove ${work}`, () => rm(work, { recursive: true, force: true }));
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const disk = join(work, 'disk.qcow2');
  const consoleFile = join(work, 'boot.log');
  const resultsFile = join(work, 'results.log');
  const qmpSocket = join(work, 'qmp.sock');
  await qemuImgOverlay(o.image.root, 'raw', disk);
  log.info(`VM: booting the VM once to save it ready (${o.shape.accel}); later runs restore it in seconds`);
  const killer = new AbortController();
  const qemu = runQemu(
    {
      ...o.spec,
      append: readyCmdline(o.image),
      disks: [{ path: disk, format: 'qcow2', serial: 'pi-root' }],
      serialFiles: [consoleFile, resultsFile],
      qmpSocket,
    },
    READY_BOOT_MS + SAVE_MS,
    work,
    killer.signal,
  );
  let exited = false;
  const done = qemu.finally(() => {
    exited = true;
  });
  let qmp: Qmp | undefined;
  try {
    const results = new FileTail(resultsFile);
    const ready = await pollUntil(async () => {
      await results.poll();
      if (resultsSay(results.text, 'ready')) return true;
      if (exited) return false;
      return undefined;
    }, READY_BOOT_MS, 100);
    if (!ready) {
      const console = await readFile(consoleFile, 'utf8').catch(() => '');
      const r = exited ? await done : undefined;
      throw new EnvironmentError(
        `the VM did not get ready to be saved (${exited ? `qemu exit ${r?.exitCode}${r?.stderr.trim() ? `: ${r.stderr.trim().split('\n').pop()}` : ''}` : `not within ${READY_BOOT_MS / 1000} s`}); last console line: ${console.trim().split('\n').pop() ?? '(none)'}`,
        'Run `part-image doctor`; PART_IMAGE_VM_BOOT=cold boots the VM for every job instead.',
      );
    }
    const bootMs = Date.now() - started;
    const saveStart = Date.now();
    qmp = await Qmp.connect(qmpSocket, 10_000);
    await qmp.execute('stop');
    await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(join(work, 'vm.state'))}` });
    const status = await pollUntil(async () => {
      const m = (await qmp!.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
      return m.status === 'completed' || m.status === 'failed' || m.status === 'cancelled' ? m : undefined;
    }, SAVE_MS, 50);
    if (status?.status !== 'completed') {
      throw new EnvironmentError(`saving the VM failed: migration ${status?.status ?? 'did not finish'}${status?.['error-desc'] ? `: ${status['error-desc']}` : ''}`);
    }
    await qmp.execute('quit').catch(() => undefined);
    await done;
    const saveMs = Date.now() - saveStart;
    const files: Record<string, FileSum> = {};
    const checked: Record<string, string> = {};
    for (const name of STATE_FILES) {
      const st = await stat(join(work, name));
      files[name] = { size: st.size, sha256: await sha256Of(join(work, name)) };
      checked[name] = statKey(st);
    }
    await rm(resultsFile, { force: true });
    const meta: StateMeta = { key, parts, savedAt: new Date().toISOString(), bootMs, saveMs, files };
    await writeFile(join(work, 'checked.json'), `${JSON.stringify(checked)}\n`);
    await writeFile(join(work, 'meta.json'), `${JSON.stringify(meta, null, 2)}\n`);
    await rm(dir, { recursive: true, force: true });
    await rename(work, dir);
    const mb = (files['vm.state'].size / 2 ** 20).toFixed(0);
    log.info(`VM: saved the ready VM in ${((Date.now() - started) / 1000).toFixed(1)} s (boot ${(bootMs / 1000).toFixed(1)} s, save ${(saveMs / 1000).toFixed(1)} s, ${mb} MiB): ${dir}`);
  } finally {
    qmp?.close();
    if (!exited) {
      // Not saved: end this VM. A QMP quit when it answers, else SIGKILL.
      const q = await Qmp.connect(qmpSocket, 2_000).catch(() => undefined);
      await q?.execute('quit', undefined, 2_000).catch(() => undefined);
      q?.close();
      await Promise.race([done, sleep(5_000)]);
      if (!exited) {
        killer.abort();
        await done.catch(() => undefined);
      }
    }
  }
}
