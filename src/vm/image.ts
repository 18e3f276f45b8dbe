// The VM's root image, built once per recipe and kept in the cache directory:
//   <cache>/vm-<recipe hash>/{root.img, vmlinuz, initrd.img, meta.json}
// mmdebstrap makes a tar of the recipe's Debian root (with the recipe's files
// added by a customize hook); part-image's own builder turns that tar into the
// ext4 root image, the same way it builds the images it verifies; the kernel
// and initrd are copied out of the tree for qemu's -kernel/-initrd.
//
// The build happens in a sibling directory that is renamed into place only
// when complete (meta.json written last), so a crash never leaves a half
// image behind a valid name. A lock directory makes concurrent callers (two
// test files, two CI jobs on one cache) wait for one build instead of
// running two. A cache hit is a stat and a small JSON read.
//
// The build directory and the lock are released by a Scope, so that an
// interrupt (SIGINT/SIGTERM: cli.ts closes every live scope, then exits)
// leaves neither behind. A process killed outright (SIGKILL, a crash) leaves
// them; the next builder takes such a lock over (see lockIsStale) and removes
// the build directories left beside it.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { homedir, hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { isShuttingDown, withScope, type Scope } from '../cleanup.js';
import { EnvironmentError, InterruptedError, ToolError } from '../errors.js';
import { run, shellQuote } from '../exec.js';
import { log } from '../log.js';
import { readTarTree } from '../input/tar.js';
import { buildRawImage } from '../build/index.js';
import { fileText, loadRecipe, recipeHash, type VmRecipe } from './recipe.js';
import { BOOT_ID, PID_NS, pidAlive, processStartTime } from '../stale.js';

export interface VmImage {
  /** The recipe hash: the cache key. */
  hash: string;
  dir: string;
  /** ext4 root, /dev/vda in the guest. Attach it with snapshot=on: it must never change. */
  root: string;
  kernel: string;
  initrd: string;
  kernelVersion: string;
  recipe: VmRecipe;
  /** This call built the image (false: cache hit). */
  built: boolean;
}

/** Size and sha256 of a cached file, written when the VM image is built. */
interface FileSum {
  size: number;
  sha256: string;
}

interface Meta {
  hash: string;
  kernelVersion: string;
  sizeMb: number;
  buildMs: number;
  builtAt: string;
  /** root.img, vmlinuz, initrd.img. Absent in caches built before the check existed: see adoptLegacy(). */
  files?: Record<string, FileSum>;
}

const MMDEBSTRAP_TIMEOUT_MS = 30 * 60_000;
const LOCK_WAIT_MS = 40 * 60_000;

/** Where part-image keeps what it builds once: PART_IMAGE_CACHE, else ~/.cache/part-image. */
export function vmCacheRoot(): string {
  return process.env.PART_IMAGE_CACHE || join(homedir(), '.cache', 'part-image');
}

function paths(dir: string) {
  return { root: join(dir, 'root.img'), kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), meta: join(dir, 'meta.json'), checked: join(dir, 'checked.json') };
}

const CACHED_FILES = ['root.img', 'vmlinuz', 'initrd.img'] as const;

async function sha256Of(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function fileSums(dir: string): Promise<Record<string, FileSum>> {
  const out: Record<string, FileSum> = {};
  for (const name of CACHED_FILES) out[name] = { size: (await stat(join(dir, name))).size, sha256: await sha256Of(join(dir, name)) };
  return out;
}

/** What a file looked like when its hash was last found right: a change of any of these means hashing it again. */
const statKey = (st: { size: number; mtimeMs: number; ctimeMs: number; ino: number }) => `${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.ino}`;

async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, `${JSON.stringify(value, null, 2)}\n`);
  await rename(tmp, file);
}

/**
 * A cache built before sizes and hashes were recorded: its root.img must be
 * the size meta.json names and the kernel and initrd non-empty; then its
 * hashes are recorded now, and checked from then on.
 */
async function adoptLegacy(dir: string, meta: Meta): Promise<string | undefined> {
  const p = paths(dir);
  const root = await stat(p.root);
  if (root.size !== meta.sizeMb * 1024 * 1024) return `root.img is ${root.size} bytes, but meta.json says ${meta.sizeMb} MiB`;
  for (const f of [p.kernel, p.initrd]) if ((await stat(f)).size === 0) return `${basename(f)} is empty`;
  meta.files = await fileSums(dir);
  await writeJsonAtomic(p.meta, meta);
  log.info(`VM: recorded the sizes and sha256 of the cached VM image ${dir}`);
  return undefined;
}

export type CacheState =
  | { state: 'missing' }
  | { state: 'damaged'; why: string }
  | { state: 'ok'; image: VmImage };

/**
 * The cached VM image, checked: each file's size always (a stat), its sha256
 * when its size, mtime, ctime or inode changed since the last check that
 * found it right (checked.json); hashing the ~650 MiB root takes 3-30 s here,
 * too slow for every boot stage.
 */
export async function checkCached(dir: string, hash: string, recipe: VmRecipe): Promise<CacheState> {
  const p = paths(dir);
  let meta: Meta;
  try {
    meta = JSON.parse(await readFile(p.meta, 'utf8')) as Meta;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'missing' };
    return { state: 'damaged', why: `meta.json cannot be read: ${(err as Error).message}` };
  }
  if (meta.hash !== hash) return { state: 'missing' };
  try {
    if (!meta.files) {
      const why = await adoptLegacy(dir, meta);
      if (why) return { state: 'damaged', why };
    }
    const files = meta.files!;
    const checked = (JSON.parse(await readFile(p.checked, 'utf8').catch(() => '{}')) ?? {}) as Record<string, string>;
    let changed = false;
    for (const name of CACHED_FILES) {
      const want = files[name];
      if (!want) return { state: 'damaged', why: `meta.json records no sha256 for ${name}` };
      const st = await stat(join(dir, name));
      if (st.size !== want.size) return { state: 'damaged', why: `${name} is ${st.size} bytes, but was built with ${want.size} (truncated?)` };
      if (checked[name] === statKey(st)) continue;
      const got = await sha256Of(join(dir, name));
      if (got !== want.sha256) return { state: 'damaged', why: `${name} has sha256 ${got.slice(0, 12)}..., but was built with ${want.sha256.slice(0, 12)}...` };
      checked[name] = statKey(st);
      changed = true;
    }
    if (changed) await writeJsonAtomic(p.checked, checked).catch(() => undefined);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { state: 'damaged', why: code === 'ENOENT' ? `a file is missing: ${(err as NodeJS.ErrnoException).path ?? ''}` : (err as Error).message };
  }
  return { state: 'ok', image: { hash, dir, root: p.root, kernel: p.kernel, initrd: p.initrd, kernelVersion: meta.kernelVersion, recipe, built: false } };
}

async function readCached(dir: string, hash: string, recipe: VmRecipe): Promise<VmImage | undefined> {
  const c = await checkCached(dir, hash, recipe);
  return c.state === 'ok' ? c.image : undefined;
}

/** The cached VM image for the recipe, or undefined; never builds (for doctor). */
export async function cachedVmImage(recipePath?: string): Promise<VmImage | undefined> {
  const c = await cachedVmImageState(recipePath);
  return c.state === 'ok' ? c.image : undefined;
}

/** The state of the cached VM image for the recipe (for doctor): ok, damaged (with why) or missing. Never builds. */
export async function cachedVmImageState(recipePath?: string): Promise<CacheState> {
  const recipe = await loadRecipe(recipePath);
  const hash = recipeHash(recipe);
  return checkCached(join(vmCacheRoot(), `vm-${hash}`), hash, recipe);
}

/** The VM image for the recipe: from the cache, or built now (about a minute) and cached. */
export async function ensureVmImage(recipePath?: string): Promise<VmImage> {
  const recipe = await loadRecipe(recipePath);
  const hash = recipeHash(recipe);
  const cacheRoot = vmCacheRoot();
  const dir = join(cacheRoot, `vm-${hash}`);
  const first = await checkCached(dir, hash, recipe);
  if (first.state === 'ok') return first.image;
  if (first.state === 'damaged') log.info(`VM: the cached VM image ${dir} is damaged (${first.why}): rebuilding it`);

  await mkdir(cacheRoot, { recursive: true });
  // The scope is live while the lock is held: an interrupt closes it, which
  // removes the build directory, then the lock.
  const other = await withScope(async (scope) => {
    const lock = await acquireVmLock(`${dir}.lock`, scope, () => readCached(dir, hash, recipe).then(Boolean));
    // Built by another part-image while this one waited for the lock.
    const again = await readCached(dir, hash, recipe);
    if (!lock || again) return again;
    await removeLeftovers(dir);
    await build(recipe, hash, dir, scope);
    return undefined;
  });
  if (other) return other;
  const built = await readCached(dir, hash, recipe);
  if (!built) throw new EnvironmentError(`the VM image in ${dir} is incomplete right after its build`);
  return { ...built, built: true };
}

// ---- the build lock ---------------------------------------------------------
//
// The lock is a directory holding owner.json; it is created complete (a
// directory prepared under a unique name, then renamed onto the lock name,
// which fails while a lock exists), so there is never a lock without an owner.
// The owner touches owner.json every HEARTBEAT_MS while it holds the lock.

const HEARTBEAT_MS = 10_000;
/** A lock whose owner cannot be checked (another host or PID namespace) is stale once its heartbeat is this old. */
export const HEARTBEAT_STALE_MS = 120_000;
/** A lock directory without owner.json (an older part-image, or one being removed) is stale after this. */
const OWNERLESS_STALE_MS = 10_000;
const OWNER = 'owner.json';

export interface LockOwner {
  pid: number;
  /** Unique per acquisition: tells this lock from a later one of the same process. */
  token: string;
  host: string;
  /** /proc/sys/kernel/random/boot_id: the pid means nothing after a reboot. */
  bootId: string;
  /** /proc/self/ns/pid: the pid means nothing in another PID namespace (another container). */
  pidNs: string;
  /** The owner's start time (/proc/PID/stat field 22): a reused pid has another one. */
  startTime: string;
}

export interface VmLock {
  path: string;
  owner: LockOwner;
}

const readText = (p: string) => readFile(p, 'utf8').then((t) => t.trim(), () => '');

export { processStartTime } from '../stale.js';

/** Who this process is, for a lock it takes. */
export async function lockOwnerSelf(): Promise<LockOwner> {
  return {
    pid: process.pid,
    token: randomBytes(8).toString('hex'),
    host: hostname(),
    bootId: BOOT_ID,
    pidNs: PID_NS,
    startTime: await processStartTime(process.pid),
  };
}

async function readOwner(lock: string): Promise<{ owner?: LockOwner; ageMs: number } | undefined> {
  const ownerFile = join(lock, OWNER);
  const st = await stat(ownerFile).catch(() => stat(lock).catch(() => undefined));
  if (!st) return undefined; // no lock
  let owner: LockOwner | undefined;
  try {
    owner = JSON.parse(await readFile(ownerFile, 'utf8')) as LockOwner;
    if (typeof owner.pid !== 'number' || typeof owner.token !== 'string') owner = undefined;
  } catch {
    owner = undefined;
  }
  if (!owner) {
    // An older part-image's lock: a bare pid, of this host and namespace.
    const pid = Number(await readText(join(lock, 'pid')));
    if (Number.isInteger(pid) && pid > 0) {
      const self = await lockOwnerSelf();
      owner = { ...self, pid, token: `legacy-${pid}-${st.mtimeMs}`, startTime: '' };
    }
  }
  return { owner, ageMs: Date.now() - st.mtimeMs };
}

/**
 * Why the lock's owner is gone, or undefined while it may still be building.
 * Where the owner's pid can be checked (same boot, same PID namespace): gone
 * when no process has that pid, or the one that has it started at another
 * time (the pid was reused). Elsewhere: gone when it stopped touching the
 * lock for HEARTBEAT_STALE_MS.
 */
export async function lockIsStale(info: { owner?: LockOwner; ageMs: number }, self: LockOwner): Promise<string | undefined> {
  const { owner, ageMs } = info;
  if (!owner) return ageMs > OWNERLESS_STALE_MS ? `it names no owner and is ${Math.round(ageMs / 1000)} s old` : undefined;
  if (owner.bootId && owner.bootId === self.bootId && owner.pidNs && owner.pidNs === self.pidNs) {
    if (!pidAlive(owner.pid)) return `its owner, pid ${owner.pid}, no longer exists`;
    const started = await processStartTime(owner.pid);
    if (owner.startTime && started && started !== owner.startTime) return `its owner, pid ${owner.pid}, no longer exists (the pid was reused)`;
    return undefined;
  }
  if (owner.host === self.host && owner.bootId && self.bootId && owner.bootId !== self.bootId) {
    return `its owner, pid ${owner.pid}, ran before this host rebooted`;
  }
  if (ageMs > HEARTBEAT_STALE_MS) {
    return `its owner, pid ${owner.pid} on ${owner.host}, stopped touching it ${Math.round(ageMs / 1000)} s ago`;
  }
  return undefined;
}

/** Removes a stale lock, unless it changed hands since it was judged (then it is left to its new owner). */
async function breakLock(lock: string, judged: LockOwner | undefined, self: LockOwner): Promise<void> {
  const grave = `${lock}.stale-${self.pid}-${self.token}`;
  try {
    await rename(lock, grave);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // someone else removed it
    throw err;
  }
  const moved = (await readOwner(grave))?.owner;
  if (moved?.token !== judged?.token) {
    // It was replaced between the judgement and the rename: put it back.
    await rename(grave, lock).catch(() => undefined);
  }
  await rm(grave, { recursive: true, force: true });
}

/**
 * Takes the build lock, or returns undefined once `done()` says the image was
 * built by the process that holds it. The lock is released when `scope`
 * closes (normally, or on an interrupt). A lock whose owner is gone
 * (lockIsStale) is taken over at once; a live owner is waited for, up to
 * LOCK_WAIT_MS.
 */
export async function acquireVmLock(lock: string, scope: Scope, done: () => Promise<boolean>, waitMs = LOCK_WAIT_MS): Promise<VmLock | undefined> {
  const self = await lockOwnerSelf();
  let heartbeat: NodeJS.Timeout | undefined;
  // Registered before the lock can exist, so that no interrupt falls between
  // taking it and being able to release it. It only ever removes our own lock.
  scope.defer(`release the lock ${lock}`, async () => {
    clearInterval(heartbeat);
    if ((await readOwner(lock))?.owner?.token === self.token) await rm(lock, { recursive: true, force: true });
  });
  const start = Date.now();
  let told = false;
  for (;;) {
    if (isShuttingDown()) throw new InterruptedError('signal');
    if (await tryCreateLock(lock, self)) {
      heartbeat = setInterval(() => {
        const now = new Date();
        void utimes(join(lock, OWNER), now, now).catch(() => undefined);
      }, HEARTBEAT_MS);
      heartbeat.unref();
      return { path: lock, owner: self };
    }
    const info = await readOwner(lock);
    if (!info) continue; // released meanwhile: try again
    const stale = await lockIsStale(info, self);
    if (stale) {
      log.info(`VM: taking over the lock ${lock}: ${stale}`);
      await breakLock(lock, info.owner, self);
      continue;
    }
    if (await done()) return undefined;
    const who = info.owner ? `pid ${info.owner.pid}${info.owner.host !== self.host ? ` on ${info.owner.host}` : ''}` : 'unknown';
    if (Date.now() - start > waitMs) {
      throw new EnvironmentError(
        `waited ${Math.round(waitMs / 60_000)} min for another part-image (${who}) to build the VM image`,
        `Remove ${lock} if that process is gone.`,
      );
    }
    if (!told) {
      told = true;
      log.info(`VM: waiting for another part-image (${who}) to finish building the VM image`);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Creates the lock complete with its owner file: true when this call made it. */
async function tryCreateLock(lock: string, self: LockOwner): Promise<boolean> {
  const fresh = `${lock}.new-${self.pid}-${self.token}`;
  await rm(fresh, { recursive: true, force: true });
  await mkdir(fresh);
  try {
    await writeFile(join(fresh, OWNER), `${JSON.stringify(self)}\n`);
    await rename(fresh, lock);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') return false;
    throw err;
  } finally {
    await rm(fresh, { recursive: true, force: true });
  }
}

/** With the lock held: build directories and broken locks that killed processes left beside `dir`. */
async function removeLeftovers(dir: string): Promise<void> {
  const base = basename(dir);
  const names = await readdir(dirname(dir)).catch(() => [] as string[]);
  for (const name of names) {
    const path = join(dirname(dir), name);
    if (name.startsWith(`${base}.build-`) || name.startsWith(`${base}.lock.stale-`)) {
      log.info(`VM: removing ${path}, left by an interrupted build`);
      await rm(path, { recursive: true, force: true });
    } else if (name.startsWith(`${base}.lock.new-`)) {
      // Another process may be about to rename it into place: only old ones.
      const age = Date.now() - (await stat(path).then((s) => s.mtimeMs, () => Date.now()));
      if (age > OWNERLESS_STALE_MS) await rm(path, { recursive: true, force: true });
    }
  }
}

/** The recipe's files and symlinks, laid out under `dir` as they go into the root. */
export async function writeOverlay(recipe: VmRecipe, dir: string): Promise<void> {
  for (const [path, f] of Object.entries(recipe.files)) {
    const target = join(dir, path);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, fileText(f), { mode: parseInt(f.mode, 8) });
  }
  for (const [path, to] of Object.entries(recipe.symlinks)) {
    const target = join(dir, path);
    await mkdir(dirname(target), { recursive: true });
    await symlink(to, target);
  }
}

/** The argv after `mmdebstrap` that writes the recipe's root to `tar`. Pure. */
export function buildMmdebstrapArgs(recipe: VmRecipe, overlay: string, tar: string): string[] {
  // Copy the overlay in as root:root, without touching the modes of the
  // directories it shares with Debian (/etc, /usr/local/lib).
  const hook = `tar -C ${shellQuote(overlay)} --owner=0 --group=0 -cf - . | tar -C "$1" --no-overwrite-dir -xpf -`;
  return [
    '--quiet',
    `--variant=${recipe.variant}`,
    `--architectures=${recipe.architecture}`,
    `--include=${recipe.include.join(',')}`,
    `--customize-hook=${hook}`,
    recipe.suite,
    tar,
    ...recipe.mirrors,
  ];
}

async function build(recipe: VmRecipe, hash: string, dir: string, outer: Scope): Promise<void> {
  const started = Date.now();
  log.info(`VM: building the VM root image ${hash} (Debian ${recipe.suite}; once per recipe, about a minute)`);
  const work = `${dir}.build-${process.pid}`;
  // Registered before it exists: an interrupt at any point removes it
  // (after a complete build it has been renamed to `dir`, and this is a no-op).
  // Retries: on an interrupt, mmdebstrap may still be writing into it for a moment.
  outer.defer(`remove ${work}`, () => rm(work, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }));
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  try {
    await withScope(async (scope) => {
      const overlay = join(work, 'overlay');
      const tar = join(work, 'root.tar');
      await writeOverlay(recipe, overlay);
      await log.step('mmdebstrap (VM root)', () =>
        run('mmdebstrap', buildMmdebstrapArgs(recipe, overlay, tar), {
          timeoutMs: MMDEBSTRAP_TIMEOUT_MS,
          hint: 'mmdebstrap needs root (or user namespaces) and access to a Debian mirror.',
        }),
      );
      const { sizeMb, kernelVersion } = await imageFromTar(recipe, tar, paths(work), scope);
      await rm(tar, { force: true });
      await rm(overlay, { recursive: true, force: true });
      // Sizes and hashes: a cache truncated or changed later is found and rebuilt (checkCached).
      const files = await fileSums(work);
      const meta: Meta = { hash, kernelVersion, sizeMb, buildMs: Date.now() - started, builtAt: new Date().toISOString(), files };
      await writeFile(paths(work).meta, `${JSON.stringify(meta, null, 2)}\n`);
      const checked: Record<string, string> = {};
      for (const name of CACHED_FILES) checked[name] = statKey(await stat(join(work, name)));
      await writeFile(paths(work).checked, `${JSON.stringify(checked, null, 2)}\n`);
    });
    await rm(dir, { recursive: true, force: true });
    await rename(work, dir);
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    // The VM is part of the host's equipment: a failed build means the boot
    // stages cannot run here (exit 3), not that the image under test is bad.
    if (err instanceof EnvironmentError || isShuttingDown()) throw err;
    const why = err instanceof ToolError ? err.message : (err as Error).message;
    throw new EnvironmentError(
      `cannot build the VM root image: ${why}`,
      'The VM image needs mmdebstrap, root (or user namespaces) and a reachable Debian mirror; `part-image doctor` shows what is missing.',
      err,
    );
  }
  log.info(`VM: VM root image ready in ${((Date.now() - started) / 1000).toFixed(0)} s (${dir})`);
}

/** Highest version first: "6.1.0-10" after "6.1.0-9". */
function compareVersionsDesc(a: string, b: string): number {
  return b.localeCompare(a, 'en', { numeric: true });
}

async function imageFromTar(
  recipe: VmRecipe,
  tar: string,
  out: { root: string; kernel: string; initrd: string },
  scope: Scope,
): Promise<{ sizeMb: number; kernelVersion: string }> {
  const tree = await log.step('read the VM root tar', () => readTarTree(tar, scope));
  const versions = tree.manifest.entries
    .filter((e) => e.type === 'file')
    .map((e) => /^\/boot\/vmlinuz-(.+)$/.exec(e.path)?.[1])
    .filter((v): v is string => v !== undefined)
    .sort(compareVersionsDesc);
  const kernelVersion = versions[0];
  const kernelBlob = kernelVersion && tree.content.get(`/boot/vmlinuz-${kernelVersion}`);
  const initrdBlob = kernelVersion && tree.content.get(`/boot/initrd.img-${kernelVersion}`);
  if (!kernelVersion || !kernelBlob || !initrdBlob) {
    throw new EnvironmentError(
      'the VM root has no /boot/vmlinuz-* with a matching /boot/initrd.img-*',
      'The recipe must include a kernel package (linux-image-cloud-amd64) and initramfs-tools.',
    );
  }
  await copyFile(kernelBlob, out.kernel);
  await copyFile(initrdBlob, out.initrd);
  const built = await log.step('build the VM root image', () =>
    buildRawImage(tree, out.root, { label: recipe.image.label, freeMb: recipe.image.freeMb, usedMb: tree.usedMb }, scope),
  );
  return { sizeMb: built.sizeMb, kernelVersion };
}
