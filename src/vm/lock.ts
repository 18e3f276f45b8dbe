// The build lock of the VM cache: one builder per cached thing (the VM image,
// a saved VM state), the others wait for it or find it done.
//
// The lock is a directory holding owner.json; it is created complete (a
// directory prepared under a unique name, then renamed onto the lock name,
// which fails while a lock exists), so there is never a lock without an owner.
// The owner touches owner.json every HEARTBEAT_MS while it holds the lock.
// A process killed outright (SIGKILL, a crash) leaves its lock behind; the
// next one takes it over (lockIsStale).
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { isShuttingDown, type Scope } from '../cleanup.js';
import { EnvironmentError, InterruptedError } from '../errors.js';
import { log } from '../log.js';
import { BOOT_ID, PID_NS, pidAlive, processStartTime } from '../stale.js';

const LOCK_WAIT_MS = 40 * 60_000;

const HEARTBEAT_MS = 10_000;
/** A lock whose owner cannot be checked (another host or PID namespace) is stale once its heartbeat is this old. */
export const HEARTBEAT_STALE_MS = 120_000;
/** A lock directory without owner.json (an older part-image, or one being removed) is stale after this. */
export const OWNERLESS_STALE_MS = 10_000;
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
export async function acquireVmLock(
  lock: string,
  scope: Scope,
  done: () => Promise<boolean>,
  waitMs = LOCK_WAIT_MS,
  what = 'the VM image',
): Promise<VmLock | undefined> {
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
        `waited ${Math.round(waitMs / 60_000)} min for another part-image (${who}) to build ${what}`,
        `Remove ${lock} if that process is gone.`,
      );
    }
    if (!told) {
      told = true;
      log.info(`VM: waiting for another part-image (${who}) to finish building ${what}`);
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

