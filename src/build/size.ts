// Image sizing, honouring the Raptor builder's USED_MB / FREE_MB / SIZE_MB.
//
// Raptor computes SIZE_MB = USED_MB + FREE_MB, and ext4's own overhead
// (journal, inode tables, group descriptors) then eats into FREE_MB. Here,
// without SIZE_MB, FREE_MB means free space the finished filesystem really
// has: we measure the overhead of an empty filesystem of the candidate size
// and add it. SIZE_MB, when given, is exact.
import { InputError, UsageError } from '../errors.js';
import { INODE_BYTES } from '../manifest/apparent-size.js';

export interface SizeInputs {
  sizeMb?: number;
  freeMb: number;
  usedMb: number;
}

export const DEFAULT_FREE_MB = 512;

/**
 * The largest size part-image accepts, in MiB: 16 TiB less one block, the
 * largest file an ext4 folder (4 KiB blocks) can hold, and so the largest
 * image most build hosts can write.
 */
export const MAX_MB = 16 * 1024 * 1024 - 1;

function parseMb(name: string, value: string | undefined, min = 0): number | undefined {
  if (value === undefined || value === '') return undefined;
  const v = value.trim();
  const range = `valid: ${min} to ${MAX_MB} (16 TiB, the largest file an ext4 folder holds)`;
  if (!/^-?\d+$/.test(v)) throw new UsageError(`${name} must be a whole number of MiB, got "${value}"; ${range}`);
  const n = Number(v);
  if (n < min || n > MAX_MB) throw new UsageError(`${name} must be a whole number of MiB, got ${v}; ${range}`);
  return n;
}

/** Flags win over the builder's env vars (SIZE_MB, FREE_MB, USED_MB). */
export function resolveSizeInputs(
  flags: { sizeMb?: string; freeMb?: string; usedMb?: string },
  env: NodeJS.ProcessEnv,
  measuredUsedMb: number,
): SizeInputs {
  const sizeMb = parseMb('--size-mb', flags.sizeMb, 2) ?? parseMb('SIZE_MB', env.SIZE_MB, 2);
  const freeMb = parseMb('--free-mb', flags.freeMb) ?? parseMb('FREE_MB', env.FREE_MB) ?? DEFAULT_FREE_MB;
  const usedMb = parseMb('--used-mb', flags.usedMb) ?? parseMb('USED_MB', env.USED_MB) ?? measuredUsedMb;
  if (sizeMb === undefined && usedMb + freeMb > MAX_MB) {
    throw new UsageError(`USED_MB + FREE_MB is ${usedMb + freeMb} MiB, more than the largest image (${MAX_MB} MiB, 16 TiB)`, 'Lower --free-mb (FREE_MB).');
  }
  return { sizeMb, freeMb, usedMb };
}

/**
 * The inodes an image needs: the entries plus headroom, never below mke2fs's
 * own default. Refuses (InputError) a count whose inode tables (256 bytes
 * each) would take more than 80% of the image: mke2fs 1.47.0 then fails
 * ("Cannot create filesystem with requested number of inodes", or no room
 * for the journal, at about 90%), and the tree would not fit anyway.
 */
export function inodesFor(entryCount: number, sizeMb: number): number {
  const byRatio = Math.floor((sizeMb * 1024 * 1024) / 16384);
  const needed = Math.ceil(entryCount * 1.1) + 64;
  if (needed * INODE_BYTES > sizeMb * 1024 * 1024 * 0.8) {
    throw new InputError(
      `the tree does not fit: its ${entryCount} entries need ${needed} inodes of ${INODE_BYTES} bytes, ${Math.ceil((needed * INODE_BYTES) / 2 ** 20)} MiB of inode tables, more than an image of ${sizeMb} MiB can hold`,
      `Raise --size-mb (SIZE_MB) to ${Math.ceil((needed * INODE_BYTES) / 2 ** 20 / 0.8) + 1} or more; when part-image sizes the image itself, raise --free-mb (FREE_MB).`,
    );
  }
  return Math.max(byRatio, needed);
}

/** The journal mke2fs gives a filesystem of about `sizeMb` (ext2fs_default_journal_size, rounded up). */
function journalMb(sizeMb: number): number {
  return sizeMb < 128 ? 4 : sizeMb < 1024 ? 16 : sizeMb < 16384 ? 64 : 256;
}

/** First guess before measuring: data + free + ~6% ext4 metadata + a journal. */
export function firstGuessMb(usedMb: number, freeMb: number): number {
  const data = usedMb + freeMb;
  return Math.ceil(data * 1.06) + journalMb(data) + 2;
}

/**
 * What the raw image takes on the host's disk: it is a sparse file, so only
 * the tree, ext4's metadata and the journal, not the free space.
 */
export function onDiskMb(usedMb: number, freeMb: number): number {
  return Math.ceil(usedMb * 1.06) + journalMb(usedMb + freeMb) + 2;
}
