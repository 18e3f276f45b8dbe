// mke2fs: formats an empty ext4 filesystem in an image file. part-image fills
// it afterwards with one debugfs script (see build/populate.ts).
import { run } from '../exec.js';

export interface Mke2fsOptions {
  label: string;
  /** Filesystem UUID and htree hash seed; fixed for reproducible images. */
  seed?: string;
  /** mkfs time, in seconds since the epoch (E2FSPROGS_FAKE_TIME). */
  fakeTime?: number;
  /** Minimum number of inodes. */
  inodes?: number;
}

export const BLOCK_SIZE = 4096;

export function buildMke2fsArgs(image: string, sizeMb: number, o: Mke2fsOptions): string[] {
  const args = ['-q', '-F', '-t', 'ext4', '-b', String(BLOCK_SIZE), '-I', '256', '-m', '0', '-L', o.label];
  const ext = ['nodiscard'];
  if (o.seed) {
    args.push('-U', o.seed);
    ext.push(`hash_seed=${o.seed}`);
  }
  if (o.inodes) args.push('-N', String(o.inodes));
  args.push('-E', ext.join(','), image, `${sizeMb}M`);
  return args;
}

export function mke2fsEnv(o: Mke2fsOptions): Record<string, string> | undefined {
  return o.fakeTime === undefined ? undefined : { E2FSPROGS_FAKE_TIME: String(o.fakeTime) };
}

export async function mke2fs(image: string, sizeMb: number, o: Mke2fsOptions): Promise<void> {
  await run('mke2fs', buildMke2fsArgs(image, sizeMb, o), { env: mke2fsEnv(o) });
}
