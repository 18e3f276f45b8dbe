// Reads an image through a read-only loop mount (root only): mount, read the
// mounted tree with the directory reader, unmount. The mount is registered in
// the scope, so that a failure or a signal still releases it.
import { mkdtemp, rmdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Manifest } from '../types.js';
import type { Scope } from '../cleanup.js';
import { EnvironmentError, InputError } from '../errors.js';
import { readDirTree } from '../input/dir.js';
import { mount, umount } from '../tools/mount.js';
import { log } from '../log.js';

/** True when something is mounted on `dir` (it sits on another device than its parent). */
async function isMountPoint(dir: string): Promise<boolean> {
  const [d, p] = await Promise.all([stat(dir).catch(() => undefined), stat(dirname(dir)).catch(() => undefined)]);
  return d !== undefined && p !== undefined && d.dev !== p.dev;
}

export interface MountReadOptions {
  /** Hash file contents (default true). */
  hash?: boolean;
}

/**
 * The manifest of `image` as the kernel sees it. lost+found is kept (the
 * diff ignores it). mtimes come from the image.
 */
export async function readMountedImage(image: string, scope: Scope, opts: MountReadOptions = {}): Promise<Manifest> {
  if (process.geteuid?.() !== 0) {
    throw new EnvironmentError(
      'reading an image through a loop mount needs root',
      'Run as root (sudo), or use the rootless reader (debugfs), which needs no privilege.',
    );
  }
  const img = resolve(image);
  const st = await stat(img).catch(() => {
    throw new InputError(`image not found: ${image}`);
  });
  if (!st.isFile() && !st.isBlockDevice()) throw new InputError(`not an image file: ${image}`);

  // rmdir, not rm -r: should the unmount fail, the image's files stay untouched.
  const dir = await mkdtemp(join(tmpdir(), 'part-image-mnt-'));
  scope.defer(`remove ${dir}`, () => rmdir(dir));
  // Registered before mounting: a signal that lands while mount runs may
  // still leave the image mounted, and the check below finds it.
  // One unmount at a time: the read's own release and a shutdown may overlap.
  let releasing: Promise<void> | undefined;
  const release = (): Promise<void> =>
    (releasing ??= (async () => {
      if (await isMountPoint(dir)) await umount(dir);
    })().finally(() => {
      releasing = undefined;
    }));
  scope.defer(`unmount ${dir}`, release);
  await mount(img, dir);

  let manifest: Manifest;
  try {
    manifest = (await readDirTree(dir, { hash: opts.hash })).manifest;
  } catch (err) {
    await release().catch((e) => log.warn(`cannot unmount ${dir}: ${(e as Error).message}`));
    throw err;
  }
  await release();
  return manifest;
}
