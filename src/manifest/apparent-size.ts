// The early SIZE_MB refusal: a tree whose apparent size exceeds the image is
// refused while it is read, before its contents are hashed (a tar holding a
// 1 TB sparse file would otherwise hash a terabyte of zeros first).
//
// Here, below the tree readers (input/), because each one refuses as it
// reads; build/size.ts sizes the image with the same inode cost.
import { InputError } from '../errors.js';
import type { ManifestEntry } from '../types.js';

/** What one entry costs in an image besides its data: its inode (tools/mke2fs.ts: -I 256). */
export const INODE_BYTES = 256;

const MiB = 1024 * 1024;
const FS_BLOCK = 4096;

/** The bytes an entry takes at its apparent size: files whole (holes included) in 4 KiB blocks, a block per directory and long symlink, and its inode. */
export function apparentBytes(e: ManifestEntry): number {
  let bytes = INODE_BYTES;
  if (e.type === 'file' && !e.hardlink) bytes += Math.ceil((e.size ?? 0) / FS_BLOCK) * FS_BLOCK;
  else if (e.type === 'dir') bytes += FS_BLOCK;
  else if (e.type === 'symlink' && (e.size ?? 0) >= 60) bytes += FS_BLOCK;
  return bytes;
}

/** The refusal, naming where the read was when the tree outgrew the image. */
export function treeTooBig(bytes: number, maxBytes: number, where: string): InputError {
  const need = Math.ceil(bytes / MiB);
  return new InputError(
    `the tree does not fit: the image is ${Math.floor(maxBytes / MiB)} MiB but needs at least ${need} MiB (SIZE_MB makes the size exact); ${where} its apparent size is already ${need} MiB ` +
      '(files at their full size, holes included, in 4 KiB blocks, plus a block per directory and 256 bytes per inode)',
    'Raise --size-mb (SIZE_MB), or leave it unset and part-image sizes the image itself; or remove the entry from the input.',
  );
}

/** Refuses a whole scanned tree (directory, layer stack) whose apparent size exceeds `maxBytes`. */
export function checkApparentSize(entries: Iterable<ManifestEntry>, maxBytes: number | undefined, source: string): void {
  if (maxBytes === undefined) return;
  let bytes = 0;
  let count = 0;
  for (const e of entries) {
    bytes += apparentBytes(e);
    count++;
  }
  if (bytes > maxBytes) throw treeTooBig(bytes, maxBytes, `${source} (${count} entries):`);
}
