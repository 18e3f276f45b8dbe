// The build stage: an InputTree becomes a raw ext4 image file.
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { InputTree, Manifest } from '../types.js';
import type { Scope } from '../cleanup.js';
import { InputError, ToolError } from '../errors.js';
import { mke2fs, writeMke2fsConf, type Mke2fsOptions } from '../tools/mke2fs.js';
import { readSuperblock } from '../tools/dumpe2fs.js';
import { populate, ImageFullError, type PopulateOptions } from './populate.js';
import { firstGuessMb, inodesFor, onDiskMb, type SizeInputs } from './size.js';
import { freeMbIn, isHostFull, notEnoughRoom } from './output-folder.js';

export interface BuildImageOptions extends SizeInputs {
  label: string;
  /** UUID used as filesystem UUID and hash seed (--seed). */
  seed?: string;
  /** SOURCE_DATE_EPOCH: fixes every time stamp, clamps mtimes. */
  sourceDateEpoch?: number;
}

export interface BuildImageResult {
  sizeMb: number;
  /** Free MiB once the tree is in. */
  freeMbActual: number;
  /** True when SIZE_MB fixed the size. */
  exactSize: boolean;
  attempts: number;
}

const MiB = 1024 * 1024;

/**
 * The tree's size as ext4 with 4 KiB blocks stores it, from the manifest
 * alone: files rounded up to blocks (a hardlink group once), a block per
 * directory and per symlink target of 60 bytes or more. Unlike `du -sm` of a
 * staging directory it does not depend on where the tree was staged, so
 * seeded (reproducible) builds size the image with it.
 */
export function manifestUsedMb(manifest: Manifest): number {
  let bytes = 0;
  for (const e of manifest.entries) {
    if (e.type === 'file' && !e.hardlink) bytes += Math.ceil((e.size ?? 0) / 4096) * 4096;
    else if (e.type === 'dir') bytes += 4096;
    else if (e.type === 'symlink' && (e.size ?? e.target?.length ?? 0) >= 60) bytes += 4096;
  }
  return Math.ceil(bytes / MiB);
}

async function format(image: string, sizeMb: number, entries: number, o: BuildImageOptions, configFile: string): Promise<void> {
  await rm(image, { force: true });
  const mk: Mke2fsOptions = { label: o.label, seed: o.seed, fakeTime: o.sourceDateEpoch, inodes: inodesFor(entries, sizeMb), configFile };
  try {
    await mke2fs(image, sizeMb, mk);
  } catch (err) {
    throw await hostFullOr(err, image, o);
  }
}

/** Fills the image; a full HOST filesystem (not the image's own) is named as such. */
async function fill(image: string, tree: InputTree, o: BuildImageOptions, popOpts: PopulateOptions): Promise<void> {
  try {
    await populate(image, tree.manifest, tree.content, popOpts);
  } catch (err) {
    throw await hostFullOr(err, image, o);
  }
}

async function hostFullOr(err: unknown, image: string, o: BuildImageOptions): Promise<unknown> {
  const text = err instanceof ToolError ? `${err.message}\n${err.stderr}` : err instanceof Error ? err.message : '';
  if (!isHostFull(text)) return err;
  const dir = dirname(image);
  return notEnoughRoom(dir, onDiskMb(o.usedMb, o.freeMb), await freeMbIn(dir).catch(() => 0));
}

async function freeMbOf(image: string): Promise<number> {
  const sb = await readSuperblock(image);
  return (sb.freeBlocks * sb.blockSize) / MiB;
}

/**
 * Formats `image` at the smallest size whose empty filesystem keeps usedMb +
 * freeMb free, measured on the image itself, and returns that size. The
 * last round's filesystem is kept when it has that size: a scratch image,
 * formatted again for the real one, cost a mke2fs and its spawn (about 20 ms
 * of a Debian root's build).
 */
async function formatToFit(image: string, entries: number, o: BuildImageOptions, configFile: string): Promise<number> {
  // Overhead grows with the size (inode tables, group descriptors, journal
  // steps), so look for the fixed point; two or three rounds reach it.
  let size = firstGuessMb(o.usedMb, o.freeMb);
  let formatted: number | undefined;
  const seen = new Set<number>();
  for (let i = 0; i < 6 && !seen.has(size); i++) {
    seen.add(size);
    await format(image, size, entries, o, configFile);
    formatted = size;
    const overhead = size - (await freeMbOf(image));
    size = Math.ceil(o.usedMb + o.freeMb + overhead);
  }
  if (formatted !== size) await format(image, size, entries, o, configFile);
  return size;
}

export async function buildRawImage(tree: InputTree, image: string, o: BuildImageOptions, scope: Scope): Promise<BuildImageResult> {
  const work = await scope.tempDir('part-image-build-');
  const configFile = await writeMke2fsConf(work);
  const entries = tree.manifest.entries.length;
  const now = o.sourceDateEpoch ?? Math.floor(Date.now() / 1000);
  const popOpts = { now, clampMtime: o.sourceDateEpoch, workDir: work };

  if (o.sizeMb !== undefined) {
    await format(image, o.sizeMb, entries, o, configFile);
    const emptyFree = await freeMbOf(image);
    if (emptyFree < o.usedMb) throw tooSmall(o.sizeMb, o.usedMb + (o.sizeMb - emptyFree));
    try {
      await fill(image, tree, o, popOpts);
    } catch (err) {
      if (err instanceof ImageFullError) throw tooSmall(o.sizeMb, o.usedMb + (o.sizeMb - emptyFree) + 1);
      throw err;
    }
    return { sizeMb: o.sizeMb, freeMbActual: await freeMbOf(image), exactSize: true, attempts: 1 };
  }

  let size = await formatToFit(image, entries, o, configFile);
  // The measured overhead is exact for metadata; directory and extent blocks
  // of the tree can add a little. Grow until FREE_MB really is free.
  for (let attempt = 1; ; attempt++) {
    if (attempt > 1) await format(image, size, entries, o, configFile);
    let full = false;
    try {
      await fill(image, tree, o, popOpts);
    } catch (err) {
      if (!(err instanceof ImageFullError)) throw err;
      full = true;
    }
    const free = full ? 0 : await freeMbOf(image);
    if (!full && free >= o.freeMb) return { sizeMb: size, freeMbActual: free, exactSize: false, attempts: attempt };
    if (attempt >= 4) {
      throw new InputError(`could not size the image: after ${attempt} attempts at ${size} MiB only ${free.toFixed(1)} MiB are free`,
        'Give the size explicitly with --size-mb (or SIZE_MB), or check --used-mb (USED_MB): it may be far below the real size of the tree.');
    }
    size += full ? Math.max(Math.ceil(size * 0.25), 16) : Math.ceil(o.freeMb - free) + 1;
  }
}

function tooSmall(sizeMb: number, neededMb: number): InputError {
  return new InputError(
    `the tree does not fit: the image is ${sizeMb} MiB but needs at least ${Math.ceil(neededMb)} MiB`,
    `Raise --size-mb (SIZE_MB) to ${Math.ceil(neededMb)} or more, or leave it unset and part-image sizes the image itself.`,
  );
}
