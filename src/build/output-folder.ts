// The host folder an image is written to: can we write there, and is there
// room? Checked before any work, so that a read-only, foreign or full folder
// is named as such (exit 3) and not mistaken for a tree too large (exit 2) or
// shown as a raw mke2fs message.
import { open, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { EnvironmentError } from '../errors.js';

const MiB = 1024 * 1024;

function whoAmI(): string {
  const uid = process.geteuid?.() ?? process.getuid?.();
  return uid === undefined ? 'this user' : `uid ${uid}`;
}

/** Turns an errno from writing in `dir` into an EnvironmentError naming the folder and what is missing. */
export function folderError(dir: string, err: NodeJS.ErrnoException, what = 'the image'): EnvironmentError | undefined {
  switch (err.code) {
    case 'EACCES':
    case 'EPERM':
      return new EnvironmentError(`cannot write ${what} into ${dir}: permission denied (${err.code}) for ${whoAmI()}`,
        'Give that user write and search permission on the folder (chmod u+wx, or chown), run as a user who has it, or choose another folder.');
    case 'EROFS':
      return new EnvironmentError(`cannot write ${what} into ${dir}: it is on a read-only filesystem`,
        'Write the image to a folder on a writable filesystem (or remount this one read-write).');
    case 'ENOSPC':
    case 'EDQUOT':
      return new EnvironmentError(`cannot write ${what} into ${dir}: ${err.code === 'EDQUOT' ? 'the disk quota is exhausted' : 'the filesystem is full'}`,
        'Free some space there, or write the image to another folder.');
    default:
      return undefined;
  }
}

/** Creates and removes a probe file in `dir`: permission, read-only and full filesystems show here. */
export async function checkWritableFolder(dir: string, probeName: string): Promise<void> {
  const probe = join(dir, probeName);
  try {
    const fh = await open(probe, 'wx');
    try {
      await fh.write(Buffer.alloc(4096));
    } finally {
      await fh.close();
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    await unlink(probe).catch(() => undefined);
    throw folderError(dir, e) ?? err;
  }
  await unlink(probe);
}

/** Free MiB in the folder for this (unprivileged) user. */
export async function freeMbIn(dir: string): Promise<number> {
  const s = await statfs(dir);
  return Math.floor((s.bavail * s.bsize) / MiB);
}

export function notEnoughRoom(dir: string, neededMb: number, freeMb: number): EnvironmentError {
  return new EnvironmentError(
    `not enough space in ${dir}: the image needs about ${neededMb} MiB on disk there and only ${freeMb} MiB are free`,
    `Free at least ${Math.max(1, neededMb - freeMb)} MiB there, or write the image to another folder.`,
  );
}

/** Throws when `dir` cannot hold `neededMb` more. */
export async function checkRoom(dir: string, neededMb: number): Promise<void> {
  const free = await freeMbIn(dir);
  if (free < neededMb) throw notEnoughRoom(dir, neededMb, free);
}

/** True for a tool's message about the HOST filesystem being full (not the image's own). */
export function isHostFull(message: string): boolean {
  return /No space left on device|Disk quota exceeded/.test(message);
}
