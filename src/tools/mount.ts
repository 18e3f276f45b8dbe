// Read-only loop mounts of an ext4 image, through run(). `mount -o loop`
// attaches the loop device with autoclear, so umount also releases it.
import { run } from '../exec.js';
import { ToolError } from '../errors.js';

/** `mount -o loop,ro,noload IMAGE DIR`: noload skips the journal replay, so nothing is written. */
export function buildMountArgs(image: string, dir: string): string[] {
  return ['-o', 'loop,ro,noload', image, dir];
}

export function buildUmountArgs(dir: string, opts: { lazy?: boolean } = {}): string[] {
  return opts.lazy ? ['-l', dir] : [dir];
}

/** Loop-mount `image` read-only on `dir` (root only). */
export async function mount(image: string, dir: string): Promise<void> {
  await run('mount', buildMountArgs(image, dir), {
    hint: 'Loop mounts need root and a free loop device (`losetup -f`); the image must hold an ext4 file system.',
    timeoutMs: 60_000,
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Unmount `dir`. A mount that is busy for a moment (a child still closing its
 * files) is retried; after that a lazy unmount detaches it, so that nothing is
 * left mounted: the loop device goes once the last open file is closed.
 */
export async function umount(dir: string): Promise<void> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await run('umount', buildUmountArgs(dir), { timeoutMs: 60_000 });
      return;
    } catch (err) {
      if (!(err instanceof ToolError)) throw err;
      await sleep(200 * (attempt + 1));
    }
  }
  await run('umount', buildUmountArgs(dir, { lazy: true }), {
    timeoutMs: 60_000,
    hint: `Something still uses ${dir}; find it with \`fuser -vm ${dir}\`.`,
  });
}
