// Image sizing, honouring the Raptor builder's USED_MB / FREE_MB / SIZE_MB.
//
// Raptor computes SIZE_MB = USED_MB + FREE_MB, and ext4's own overhead
// (journal, inode tables, group descriptors) then eats into FREE_MB. Here,
// without SIZE_MB, FREE_MB means free space the finished filesystem really
// has: we measure the overhead of an empty filesystem of the candidate size
// and add it. SIZE_MB, when given, is exact.
import { UsageError } from '../errors.js';

export interface SizeInputs {
  sizeMb?: number;
  freeMb: number;
  usedMb: number;
}

export const DEFAULT_FREE_MB = 512;

function parseMb(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  if (!/^\d+$/.test(value.trim())) throw new UsageError(`${name} must be a whole number of MiB, got "${value}"`);
  return Number(value.trim());
}

/** Flags win over the builder's env vars (SIZE_MB, FREE_MB, USED_MB). */
export function resolveSizeInputs(
  flags: { sizeMb?: string; freeMb?: string; usedMb?: string },
  env: NodeJS.ProcessEnv,
  measuredUsedMb: number,
): SizeInputs {
  const sizeMb = parseMb('--size-mb', flags.sizeMb) ?? parseMb('SIZE_MB', env.SIZE_MB);
  const freeMb = parseMb('--free-mb', flags.freeMb) ?? parseMb('FREE_MB', env.FREE_MB) ?? DEFAULT_FREE_MB;
  const usedMb = parseMb('--used-mb', flags.usedMb) ?? parseMb('USED_MB', env.USED_MB) ?? measuredUsedMb;
  if (sizeMb !== undefined && sizeMb < 2) throw new UsageError(`an ext4 image needs at least 2 MiB, SIZE_MB is ${sizeMb}`);
  return { sizeMb, freeMb, usedMb };
}

/** The inodes an image needs: the entries plus headroom, never below mke2fs's own default. */
export function inodesFor(entryCount: number, sizeMb: number): number {
  const byRatio = Math.floor((sizeMb * 1024 * 1024) / 16384);
  return Math.max(byRatio, Math.ceil(entryCount * 1.1) + 64);
}

/** First guess before measuring: data + free + ~6% ext4 metadata + a journal. */
export function firstGuessMb(usedMb: number, freeMb: number): number {
  const data = usedMb + freeMb;
  const journal = data < 128 ? 4 : data < 1024 ? 16 : data < 16384 ? 64 : 256;
  return Math.ceil(data * 1.06) + journal + 2;
}
