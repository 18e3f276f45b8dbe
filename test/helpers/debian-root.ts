// A real Debian bookworm root as a pax tar, built with mmdebstrap and cached
// by its recipe, so that only the first run on a machine pays the ~30 s.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';

export const DEBIAN_ROOT_RECIPE = [
  '--variant=minbase',
  '--include=systemd,systemd-sysv,dbus,iputils-ping',
  'bookworm',
];

/** A lock older than this is taken to be left behind by a killed run. */
const STALE_LOCK_MS = 10 * 60_000;
const LOCK_POLL_MS = 1_000;

/** PART_IMAGE_CACHE, else ~/.cache/part-image; empty means unset, as in src/vm/image.ts. */
export function cacheDir(): string {
  return process.env.PART_IMAGE_CACHE || join(homedir(), '.cache', 'part-image');
}

/**
 * Runs `fn` holding the lock directory `lock` (mkdir is atomic), so that two
 * vitest workers never build the same thing at once. The holder touches the
 * lock every minute; a lock untouched for STALE_LOCK_MS was left by a killed
 * run and is removed and taken over.
 */
async function withLock<T>(lock: string, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const since = await stat(lock).then((s) => Date.now() - s.mtimeMs, () => 0);
      if (since > STALE_LOCK_MS) {
        process.stderr.write(`removing the stale lock ${lock} (${Math.round(since / 1000)} s old)\n`);
        await rm(lock, { recursive: true, force: true });
      } else {
        await sleep(LOCK_POLL_MS);
      }
    }
  }
  const touch = setInterval(() => {
    const now = new Date();
    utimes(lock, now, now).catch(() => undefined);
  }, 60_000);
  try {
    return await fn();
  } finally {
    clearInterval(touch);
    await rm(lock, { recursive: true, force: true });
  }
}

/** Path of the cached Debian root tar; builds it on first use. */
export async function debianRootTar(): Promise<string> {
  const key = createHash('sha256').update(JSON.stringify(DEBIAN_ROOT_RECIPE)).digest('hex').slice(0, 12);
  const dir = cacheDir();
  const tar = join(dir, `debian-root-${key}.tar`);
  if (existsSync(tar)) return tar;
  await mkdir(dir, { recursive: true });
  return withLock(`${tar}.lock`, async () => {
    // Another worker may have built it while this one waited for the lock.
    if (existsSync(tar)) return tar;
    const tmp = `${tar}.tmp-${process.pid}.tar`;
    try {
      await execa('mmdebstrap', ['--quiet', ...DEBIAN_ROOT_RECIPE.slice(0, -1), DEBIAN_ROOT_RECIPE.at(-1)!, tmp], {
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      await rename(tmp, tar);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    return tar;
  });
}
