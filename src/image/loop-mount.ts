// A read-only loop mount of an image that is always released: on success, on
// failure and on SIGINT/SIGTERM (the scope). Root only. Used by the mounted-image
// reader and by the nspawn stage.
import { mkdtemp, rmdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Scope } from '../cleanup.js';
import { mount, umount } from '../tools/mount.js';

/** True when something is mounted on `dir` (it sits on another device than its parent). */
async function isMountPoint(dir: string): Promise<boolean> {
  const [d, p] = await Promise.all([stat(dir).catch(() => undefined), stat(dirname(dir)).catch(() => undefined)]);
  return d !== undefined && p !== undefined && d.dev !== p.dev;
}

export interface LoopMount {
  dir: string;
  /** Unmounts (idempotent; also run when the scope closes). */
  release(): Promise<void>;
}

export async function loopMountReadOnly(image: string, scope: Scope): Promise<LoopMount> {
  // rmdir, not rm -r: should the unmount fail, the image's files stay untouched.
  const dir = await mkdtemp(join(tmpdir(), 'part-image-mnt-'));
  scope.defer(`remove ${dir}`, () => rmdir(dir));
  // Registered before mounting: a signal that lands while mount runs may
  // still leave the image mounted, and the check finds it.
  // One unmount at a time: the caller's own release and a shutdown may overlap.
  let releasing: Promise<void> | undefined;
  const release = (): Promise<void> =>
    (releasing ??= (async () => {
      if (await isMountPoint(dir)) await umount(dir);
    })().finally(() => {
      releasing = undefined;
    }));
  scope.defer(`unmount ${dir}`, release);
  await mount(image, dir);
  return { dir, release };
}
