// File contents for the rootless image reader (image/debugfs-reader.ts):
// hashed in-process straight from the image file through each inode's
// extent map (holes and unwritten extents read as zeros, the last block cut
// at the file size), long symlink targets read the same way, and `dump
// <INODE> FILE` for what has no block map (inline data, encrypted inodes).
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, openSync, readSync } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { checkNotInterrupted, withScope } from '../cleanup.js';
import { quoteDebugfsArg, runDebugfs } from '../tools/debugfs.js';
import type { InodeStat } from '../tools/debugfs-stat.js';
import { BATCH, Damage, failOnErrors } from './debugfs-walk.js';
import type { HashWorker, Piece } from './hash-worker.js';

const EXT4_INLINE_DATA_FL = 0x10000000;
const EXT4_ENCRYPT_FL = 0x800;
/** Bytes of fallback `dump` output kept on disk at once. */
const DUMP_BATCH_BYTES = 256 * 1024 * 1024;
const READ_CHUNK = 1024 * 1024;

/** What was read per inode, beyond its stat. */
export interface Content {
  sha256?: string;
  target?: string;
}

// ---------------------------------------------------------------------------
// Contents: from the image file through the extent maps; `dump` for the rest

function hasBlockMap(st: InodeStat): boolean {
  return st.extents !== undefined && (st.flags & EXT4_INLINE_DATA_FL) === 0 && (st.flags & EXT4_ENCRYPT_FL) === 0;
}

/**
 * Reads what `inodes` need beyond their stat: long symlink targets at once,
 * into `content`; file contents are queued to `hasher` (answered by
 * inode); what has no block map goes to `fallback`.
 */
export async function readContents(
  reader: BlockReader,
  inodes: InodeStat[],
  hasher: HashWorker | undefined,
  content: Map<number, Content>,
  fallback: InodeStat[],
): Promise<void> {
  for (const st of inodes) {
    if (st.type === 'symlink') {
      if (st.fastLink !== undefined) content.set(st.inode, { target: st.fastLink });
      else if (!hasBlockMap(st)) fallback.push(st);
      else {
        const parts: Buffer[] = [];
        await reader.readFile(st, (b) => parts.push(Buffer.from(b)));
        content.set(st.inode, { target: Buffer.concat(parts).toString('utf8') });
      }
    } else if (st.type === 'regular' && hasher) {
      if (st.size === 0) content.set(st.inode, { sha256: EMPTY_SHA256 });
      else if (!hasBlockMap(st)) fallback.push(st);
      else hasher.hash({ inode: st.inode, pieces: reader.plan(st) });
    }
  }
  hasher?.flush();
}

const EMPTY_SHA256 = createHash('sha256').digest('hex');
const ZEROS = Buffer.alloc(READ_CHUNK);

/** Bytes fed to a sink between two yields to the event loop (signals, timers, debugfs pipes). */
const YIELD_BYTES = 64 * 1024 * 1024;

export class BlockReader {
  private fd: number;
  private buf = Buffer.allocUnsafe(READ_CHUNK);
  private sinceYield = 0;

  constructor(
    image: string,
    private bs: number,
    /** Blocks in the filesystem: an extent past them points outside it. */
    private blockCount: bigint,
  ) {
    this.fd = openSync(image, 'r');
  }

  close(): void {
    closeSync(this.fd);
  }

  /** readPlan() with this filesystem's geometry. */
  plan(st: InodeStat): Piece[] {
    return readPlan(st, this.bs, this.blockCount);
  }

  /** Feeds `size` bytes of inode `st`'s file through its block map to `sink` (chunks are reused: copy to keep). */
  async readFile(st: InodeStat, sink: (chunk: Buffer) => void): Promise<void> {
    for (const p of readPlan(st, this.bs, this.blockCount)) {
      if ('zeros' in p) await this.zeros(p.zeros, sink);
      else await this.copy(st, p.from, p.bytes, sink);
    }
  }

  /** Lets signals in now and then: a sparse file in a hostile image can claim terabytes of holes. */
  private async fed(n: number): Promise<void> {
    this.sinceYield += n;
    if (this.sinceYield >= YIELD_BYTES) {
      this.sinceYield = 0;
      await new Promise((r) => setImmediate(r));
      checkNotInterrupted();
    }
  }

  private async zeros(n: number, sink: (chunk: Buffer) => void): Promise<void> {
    while (n > 0) {
      const k = Math.min(n, READ_CHUNK);
      sink(ZEROS.subarray(0, k));
      n -= k;
      await this.fed(k);
    }
  }

  private async copy(st: InodeStat, offset: number, n: number, sink: (chunk: Buffer) => void): Promise<void> {
    while (n > 0) {
      const want = Math.min(n, READ_CHUNK);
      let got = 0;
      while (got < want) {
        const r = readSync(this.fd, this.buf, got, want - got, offset + got);
        if (r === 0) throw new Damage(`inode ${st.inode}: a block at byte ${offset + got} lies past the end of the image file`);
        got += r;
      }
      sink(this.buf.subarray(0, want));
      offset += want;
      n -= want;
      await this.fed(want);
    }
  }
}

/**
 * The pieces of inode `st`'s file in read order, from its extent map: holes
 * and unwritten extents as zeros, the last block cut at the file size. An
 * extent that overlaps another or lies outside the filesystem is damage.
 */
export function readPlan(st: InodeStat, bs: number, blockCount: bigint): Piece[] {
  const size = st.size;
  const sorted = [...st.extents!].sort((a, b) => a.logical - b.logical);
  const pieces: Piece[] = [];
  const zeros = (n: number) => {
    if (n > 0) pieces.push({ zeros: n });
  };
  let pos = 0;
  for (const x of sorted) {
    const start = x.logical * bs;
    if (start >= size) break;
    if (start < pos) throw new Damage(`inode ${st.inode}: overlapping extents at logical block ${x.logical}`);
    if (!x.uninit && BigInt(x.physical) + BigInt(x.length) > blockCount) {
      throw new Damage(`inode ${st.inode}: an extent (blocks ${x.physical}-${x.physical + x.length - 1}) lies outside the filesystem's ${blockCount} blocks`);
    }
    zeros(start - pos);
    const len = Math.min(x.length * bs, size - start);
    if (x.uninit) zeros(len);
    else pieces.push({ from: x.physical * bs, bytes: len });
    pos = start + len;
  }
  zeros(size - pos);
  return pieces;
}

/** Contents without a block map (inline data): `dump <N> FILE` in batches, then hash the files. */
export async function dumpContents(image: string, inodes: InodeStat[], content: Map<number, Content>): Promise<void> {
  await withScope(async (scope) => {
    const dir = await scope.tempDir('part-image-dump-');
    let i = 0;
    while (i < inodes.length) {
      const batch: InodeStat[] = [];
      let bytes = 0;
      while (i < inodes.length && (batch.length === 0 || bytes + inodes[i].size <= DUMP_BATCH_BYTES) && batch.length < BATCH) {
        bytes += inodes[i].size;
        batch.push(inodes[i++]);
      }
      const cmds = batch.map((st) => `dump <${st.inode}> ${quoteDebugfsArg(join(dir, String(st.inode)))}`);
      const res = await runDebugfs(image, cmds);
      failOnErrors(res, 'dump file contents');
      for (const st of batch) {
        const file = join(dir, String(st.inode));
        const size = await stat(file).then((s) => s.size, () => -1);
        // debugfs 1.47.0 dumps an inline-data file's whole inline area (60 bytes and
        // more, zero padded), not just i_size bytes: cut at the size. A shorter
        // dump is only right for inline data (the rest reads as zeros).
        const inline = (st.flags & EXT4_INLINE_DATA_FL) !== 0;
        if (size < 0 || (size < st.size && !inline)) {
          throw new Damage(`debugfs dumped ${size < 0 ? 'nothing' : `${size} bytes`} of ${st.size} for inode ${st.inode}`);
        }
        const bytes = Math.min(size, st.size);
        if (st.type === 'symlink') {
          const data = bytes === 0 ? Buffer.alloc(0) : (await readFile(file)).subarray(0, bytes);
          content.set(st.inode, { target: Buffer.concat([data, Buffer.alloc(st.size - bytes)]).toString('utf8') });
        } else {
          const h = createHash('sha256');
          if (bytes > 0) {
            for await (const chunk of createReadStream(file, { start: 0, end: bytes - 1, highWaterMark: READ_CHUNK })) h.update(chunk as Buffer);
          }
          for (let n = st.size - bytes; n > 0; n -= READ_CHUNK) h.update(ZEROS.subarray(0, Math.min(n, READ_CHUNK)));
          content.set(st.inode, { sha256: h.digest('hex') });
        }
        await rm(file, { force: true });
      }
    }
  });
}
