// What a file is before it is read as a tar: its first blocks, a tar header's
// checksum, and the compressions part-image does not read itself (with the
// command that unpacks each).
import { open } from 'node:fs/promises';
import { InputError } from '../errors.js';
import { BLOCK } from './tar-tree.js';

export async function sniff(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(BLOCK);
    const { bytesRead } = await fh.read(buf, 0, BLOCK, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

export function notATar(path: string, why: string, cause?: unknown): InputError {
  return new InputError(`not a valid tar archive: ${path}: ${why}`,
    'Give --input a .tar or .tar.gz archive, a directory, or a Raptor layer stack.', cause);
}

/** True when `block` is a tar header whose checksum holds (then no compression magic is looked for). */
export function isTarHeader(block: Buffer): boolean {
  if (block.length < BLOCK) return false;
  const stored = block.toString('latin1', 148, 156).replace(/\0.*$/s, '').trim();
  if (!/^[0-7]+$/.test(stored)) return false;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i];
  return sum === parseInt(stored, 8);
}

/** Compression formats part-image does not unpack, by their magic bytes. */
const COMPRESSIONS: [magic: (b: Buffer) => boolean, name: string, command: string][] = [
  [(b) => b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])), 'xz', 'xz -dk'],
  [(b) => b.readUInt32LE(0) === 0xfd2fb528, 'zstd', 'zstd -d'],
  [(b) => /^BZh[1-9](1AY&SY|\x17rE8P\x90)/.test(b.toString('latin1', 0, 10)), 'bzip2', 'bzip2 -dk'],
  [(b) => b.readUInt32LE(0) === 0x184d2204, 'lz4', 'lz4 -d'],
  [(b) => b.toString('latin1', 0, 5) === 'LZIP\x01', 'lzip', 'lzip -dk'],
  [(b) => b[0] === 0x1f && b[1] === 0x9d, 'compress (.Z)', 'uncompress'],
  // lzma_alone: properties byte 0x5d and a dictionary size that is a power of two.
  [(b) => b[0] === 0x5d && [16, 20, 22, 23, 24, 25, 26].some((p) => b.readUInt32LE(1) === 2 ** p), 'lzma', 'unlzma -k'],
];

export function refuseCompression(path: string, magic: Buffer): void {
  if (isTarHeader(magic)) return;
  const padded = magic.length >= 16 ? magic : Buffer.concat([magic, Buffer.alloc(16 - magic.length)]);
  for (const [test, name, cmd] of COMPRESSIONS) {
    if (test(padded)) {
      throw new InputError(`not a valid tar archive: ${path} is ${name}-compressed; part-image reads plain and gzip-compressed tars only`,
        `Decompress it first: ${cmd} ${path}`);
    }
  }
}
