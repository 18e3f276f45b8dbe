// A read-only loop mount of an image that is always released: on success, on
// failure and on SIGINT/SIGTERM (the scope). Root only. Used by the mounted-image
// reader and by the nspawn stage.
import { mkdtemp, readFile, realpath, rmdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { Scope } from '../cleanup.js';
import { mount, umount } from '../tools/mount.js';

/** True when something is mounted on `dir` (it sits on another device than its parent). */
async function isMountPoint(dir: string): Promise<boolean> {
  const [d, p] = await Promise.all([stat(dir).catch(() => undefined), stat(dirname(dir)).catch(() => undefined)]);
  return d !== undefined && p !== undefined && d.dev !== p.dev;
}

/** The block device (e.g. "loop3") that the file system mounted on `dir` lives on, from sysfs. */
async function deviceOf(dir: string): Promise<string | undefined> {
  const dev = (await stat(dir).catch(() => undefined))?.dev;
  if (dev === undefined) return undefined;
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00);
  return realpath(`/sys/dev/block/${major}:${minor}`).then((p) => basename(p), () => undefined);
}

/** True while loop device `dev` is still attached to `file`. */
async function stillAttached(dev: string, file: string): Promise<boolean> {
  const back = await readFile(`/sys/block/${dev}/loop/backing_file`, 'utf8').catch(() => undefined);
  return back?.trim() === file;
}

/** How long a loop device may stay attached after its unmount. */
const DETACH_WAIT_MS = 10_000;

/**
 * Waits until loop device `dev` no longer holds `file`. `mount -o loop`
 * sets autoclear: the kernel detaches the device when its last user lets
 * go, which can be a moment after umount returns (a container's mount
 * namespace still being torn down after nspawn exited holds it too).
 */
async function waitDetached(dev: string, file: string): Promise<void> {
  const until = Date.now() + DETACH_WAIT_MS;
  while (await stillAttached(dev, file)) {
    if (Date.now() >= until) {
      throw new Error(`/dev/${dev} still holds ${file} ${DETACH_WAIT_MS / 1000} s after the unmount; detach it with \`losetup -d /dev/${dev}\` once nothing uses it (\`fuser -vm /dev/${dev}\`)`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface LoopMount {
  dir: string;
  /** Unmounts and waits for the loop device to go (idempotent; also run when the scope closes). */
  release(): Promise<void>;
}

export async function loopMountReadOnly(image: string, scope: Scope): Promise<LoopMount> {
  // The path the kernel shows as the loop device's backing file; mount itself says what is wrong with a bad one.
  const backing = await realpath(image).catch(() => resolve(image));
  // rmdir, not rm -r: should the unmount fail, the image's files stay untouched.
  const dir = await mkdtemp(join(tmpdir(), 'part-image-mnt-'));
  scope.defer(`remove ${dir}`, () => rmdir(dir));
  /** The loop device, once the mount is up. */
  let loop: string | undefined;
  const unmount = async (): Promise<void> => {
    if (await isMountPoint(dir)) await umount(dir);
    if (loop) await waitDetached(loop, backing);
  };
  // One unmount at a time: the caller's own release and a shutdown may overlap.
  let releasing: Promise<void> | undefined;
  const release = (): Promise<void> =>
    (releasing ??= unmount().finally(() => {
      releasing = undefined;
    }));
  // Registered before mounting: a signal that lands while mount runs may
  // still leave the image mounted, and the check finds it. The caller's own
  // release may be running outside the cleanup, where an interrupt refuses
  // its umount: the scope waits for it, whatever its outcome, then unmounts
  // itself.
  scope.defer(`unmount ${dir}`, async () => {
    await releasing?.catch(() => undefined);
    await unmount();
  });
  await mount(image, dir);
  loop = await deviceOf(dir);
  return { dir, release };
}
