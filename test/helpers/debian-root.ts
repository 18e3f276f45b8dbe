// A real Debian bookworm root as a pax tar, built with mmdebstrap and cached
// by its recipe, so that only the first run on a machine pays the ~30 s.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rename } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

export const DEBIAN_ROOT_RECIPE = [
  '--variant=minbase',
  '--include=systemd,systemd-sysv,dbus,iputils-ping',
  'bookworm',
];

export function cacheDir(): string {
  return process.env.PART_IMAGE_CACHE ?? join(homedir(), '.cache', 'part-image');
}

/** Path of the cached Debian root tar; builds it on first use. */
export async function debianRootTar(): Promise<string> {
  const key = createHash('sha256').update(JSON.stringify(DEBIAN_ROOT_RECIPE)).digest('hex').slice(0, 12);
  const dir = cacheDir();
  const tar = join(dir, `debian-root-${key}.tar`);
  if (existsSync(tar)) return tar;
  await mkdir(dir, { recursive: true });
  const tmp = `${tar}.tmp-${process.pid}.tar`;
  await execa('mmdebstrap', ['--quiet', ...DEBIAN_ROOT_RECIPE.slice(0, -1), DEBIAN_ROOT_RECIPE.at(-1)!, tmp], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  await rename(tmp, tar);
  return tar;
}
