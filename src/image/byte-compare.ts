// Compares two image files byte by byte, in one pass that also hashes both:
// the first differing offset, and which blocks differ (capped).
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

export interface ByteComparison {
  identical: boolean;
  sizeA: number;
  sizeB: number;
  sha256A: string;
  sha256B: string;
  /** Offset of the first differing byte (or of the end of the shorter file). */
  firstOffset?: number;
  /** Numbers of the differing blocks, in order, at most `maxBlocks` of them. */
  blocks: number[];
  /** How many blocks differ in all (the list above may be cut). */
  blockCount: number;
}

const CHUNK = 8 * 1024 * 1024;

export async function compareFiles(a: string, b: string, blockSize = 4096, maxBlocks = 4096): Promise<ByteComparison> {
  const fa = await open(a, 'r');
  const fb = await open(b, 'r');
  try {
    const sizeA = (await fa.stat()).size;
    const sizeB = (await fb.stat()).size;
    const ha = createHash('sha256');
    const hb = createHash('sha256');
    const bufA = Buffer.alloc(CHUNK);
    const bufB = Buffer.alloc(CHUNK);
    let firstOffset: number | undefined;
    const blocks: number[] = [];
    let blockCount = 0;
    const end = Math.max(sizeA, sizeB);
    for (let pos = 0; pos < end; pos += CHUNK) {
      const [ra, rb] = await Promise.all([fa.read(bufA, 0, CHUNK, pos), fb.read(bufB, 0, CHUNK, pos)]);
      const ca = bufA.subarray(0, ra.bytesRead);
      const cb = bufB.subarray(0, rb.bytesRead);
      ha.update(ca);
      hb.update(cb);
      if (ca.equals(cb)) continue;
      // Walk the chunk block by block; chunks are whole blocks (CHUNK % blockSize == 0).
      const n = Math.max(ca.length, cb.length);
      for (let off = 0; off < n; off += blockSize) {
        const xa = ca.subarray(off, off + blockSize);
        const xb = cb.subarray(off, off + blockSize);
        if (xa.equals(xb)) continue;
        if (firstOffset === undefined) firstOffset = pos + off + firstDiffIndex(xa, xb);
        blockCount++;
        if (blocks.length < maxBlocks) blocks.push((pos + off) / blockSize);
      }
    }
    return {
      identical: firstOffset === undefined,
      sizeA, sizeB, sha256A: ha.digest('hex'), sha256B: hb.digest('hex'),
      firstOffset, blocks, blockCount,
    };
  } finally {
    await fa.close();
    await fb.close();
  }
}

function firstDiffIndex(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** Reads one block of a file (zeros past its end). */
export async function readBlock(path: string, block: number, blockSize: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(blockSize);
    await fh.read(buf, 0, blockSize, block * blockSize);
    return buf;
  } finally {
    await fh.close();
  }
}
