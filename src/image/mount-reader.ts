// Reads an image through a read-only loop mount (root only): mount, read the
// mounted tree with the directory reader, unmount. The mount is registered in
// the scope, so that a failure or a signal still releases it.
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Manifest } from '../types.js';
import type { Scope } from '../cleanup.js';
import { EnvironmentError, InputError } from '../errors.js';
import { readDirTree } from '../walk/dir.js';
import { loopMountReadOnly } from './loop-mount.js';
import { log } from '../log.js';

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

  const { dir, release } = await loopMountReadOnly(img, scope);

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
