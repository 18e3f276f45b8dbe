// What is left of a loop mount of an image file, and a safety net that
// releases it, so that a failing test does not leave the host with a mount.
import { mkdir } from 'node:fs/promises';
import { execa } from 'execa';

/**
 * Loop devices backed by `file`, and where they are mounted. Devices that are
 * mounted nowhere are looked at again for up to `settleMs`: the kernel
 * detaches an auto-clear loop device (mount -o loop) shortly after its last
 * umount, not at once, and one seen in between is not left over. Under the
 * load of the whole suite on 2 cores that took more than 3 s once (a CI run);
 * a device that is really left over stays, so a longer wait costs nothing
 * but on a failure.
 */
export async function loopLeftovers(file: string, settleMs = 20_000): Promise<string[]> {
  const until = Date.now() + settleMs;
  for (;;) {
    const found = await loopsOf(file);
    if (!found.length || found.some((l) => l.includes(' mounted on ')) || Date.now() >= until) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function loopsOf(file: string): Promise<string[]> {
  const loops = (await execa('losetup', ['-j', file])).stdout.split('\n').filter(Boolean);
  const found: string[] = [];
  for (const line of loops) {
    const dev = line.slice(0, line.indexOf(':'));
    found.push(line);
    const targets = (await execa('findmnt', ['-n', '-o', 'TARGET', '-S', dev], { reject: false })).stdout;
    found.push(...targets.split('\n').filter(Boolean).map((t) => `${dev} mounted on ${t}`));
  }
  return found;
}

/** Unmounts and detaches whatever loop device backs `file`. */
export async function forceRelease(file: string): Promise<void> {
  const loops = (await execa('losetup', ['-j', file], { reject: false })).stdout.split('\n').filter(Boolean);
  for (const line of loops) {
    const dev = line.slice(0, line.indexOf(':'));
    const targets = (await execa('findmnt', ['-n', '-o', 'TARGET', '-S', dev], { reject: false })).stdout.split('\n');
    for (const t of targets.filter(Boolean)) await execa('umount', [t], { reject: false });
    await execa('losetup', ['-d', dev], { reject: false });
  }
}

/** Loop-mounts `img` read-only on a new folder `dir`, and records the mount in `mounted` (umount them in reverse after the tests). */
export async function mountReadOnly(img: string, dir: string, mounted: string[]): Promise<string> {
  await mkdir(dir);
  await execa('mount', ['-o', 'loop,ro', img, dir]);
  mounted.push(dir);
  return dir;
}
