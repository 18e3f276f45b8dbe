// References from a qcow2 or vmdk file to other files, found by reading the
// file's own header, before any tool opens it.
//
// qemu follows such references when it opens an image: a qcow2 backing file
// (a path, or a `json:{...}` block-device spec), a qcow2 external data file,
// a vmdk descriptor's extents (any path on the host), a vmdk parent
// (parentFileNameHint). An image carrying one would make part-image read a
// host file and judge it as part of the image. `qemu-img info` does not
// follow qcow2 references, but it DOES open every extent of a vmdk
// descriptor (checked with strace on qemu 7.2), so these checks run on the
// bytes of the file alone, the way qemu's block/qcow2.c and block/vmdk.c read
// them.
import { open } from 'node:fs/promises';
import { InputError } from '../errors.js';
import type { ForeignReference } from '../types.js';

// ---------------------------------------------------------------------------
// qcow2 (docs/interop/qcow2.txt): big-endian header, then header extensions.

const QCOW2_MAGIC = 0x514649fb;
const QCOW2_EXT_DATA_FILE = 0x44415441;
const QCOW2_INCOMPAT_DATA_FILE = 0x4;

export interface Qcow2Header {
  version: number;
  clusterBits: number;
  virtualSize: bigint;
  cryptMethod: number;
  incompatible: bigint;
  backingFile?: string;
  dataFile?: string;
}

/** Parses a qcow2 header from the file's first bytes (its first cluster, or more). A string says why it is not one. */
export function parseQcow2Header(buf: Buffer): Qcow2Header | string {
  if (buf.length < 72 || buf.readUInt32BE(0) !== QCOW2_MAGIC) return 'no qcow2 header';
  const version = buf.readUInt32BE(4);
  if (version !== 2 && version !== 3) return `qcow2 version ${version} (qemu knows 2 and 3)`;
  const backingOffset = buf.readBigUInt64BE(8);
  const backingSize = buf.readUInt32BE(16);
  const out: Qcow2Header = {
    version,
    clusterBits: buf.readUInt32BE(20),
    virtualSize: buf.readBigUInt64BE(24),
    cryptMethod: buf.readUInt32BE(32),
    incompatible: version >= 3 && buf.length >= 80 ? buf.readBigUInt64BE(72) : 0n,
  };
  if (backingOffset !== 0n) {
    const start = Number(backingOffset);
    // A name outside the bytes given is still a backing file: say so rather than miss it.
    out.backingFile = start + backingSize <= buf.length ? buf.subarray(start, start + backingSize).toString('utf8') : `(a name of ${backingSize} bytes at byte ${start})`;
  }
  const headerLength = version >= 3 && buf.length >= 104 ? buf.readUInt32BE(100) : 72;
  for (let at = headerLength; at + 8 <= buf.length; ) {
    const type = buf.readUInt32BE(at);
    const len = buf.readUInt32BE(at + 4);
    if (type === 0) break;
    if (type === QCOW2_EXT_DATA_FILE) out.dataFile = buf.subarray(at + 8, Math.min(buf.length, at + 8 + len)).toString('utf8');
    at += 8 + Math.ceil(len / 8) * 8;
  }
  if (out.incompatible & BigInt(QCOW2_INCOMPAT_DATA_FILE) && out.dataFile === undefined) out.dataFile = '(a data file given only on the command line)';
  return out;
}

export function qcow2References(h: Qcow2Header): ForeignReference[] {
  const out: ForeignReference[] = [];
  if (h.backingFile !== undefined) out.push({ kind: 'backing file', target: h.backingFile });
  if (h.dataFile !== undefined) out.push({ kind: 'external data file', target: h.dataFile });
  return out;
}

// ---------------------------------------------------------------------------
// vmdk: a sparse file ("KDMV" header, little-endian) or a text descriptor.

const SECTOR = 512;
/** qemu reads this much of the descriptor when it looks for parentFileNameHint (DESC_SIZE in block/vmdk.c). */
const VMDK_DESC_SIZE = 20 * SECTOR;

export interface VmdkSparseHeader {
  version: number;
  capacity: bigint;
  descOffset: bigint;
  descSize: bigint;
}

export function parseVmdkSparseHeader(buf: Buffer): VmdkSparseHeader | string {
  if (buf.length < 64 || buf.subarray(0, 4).toString('latin1') !== 'KDMV') return 'no vmdk sparse header';
  return {
    version: buf.readUInt32LE(4),
    capacity: buf.readBigUInt64LE(12),
    descOffset: buf.readBigUInt64LE(28),
    descSize: buf.readBigUInt64LE(36),
  };
}

/**
 * The extent lines of a vmdk descriptor ("RW 16384 FLAT "file.vmdk" 0"), as
 * qemu's vmdk_parse_extents() matches them (access, sectors, type, quoted
 * name), whatever their access mode or type, and its parent, if any.
 */
export function parseVmdkDescriptor(text: string): { extents: string[]; parent?: string } {
  const upToNul = text.split('\0')[0];
  const extents = upToNul
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^\S{1,10}\s+[+-]?\d+\s+\S{1,10}\s+"[^\n\r"]*"/.test(l));
  const parent = /parentFileNameHint\s*=\s*"([^"]*)"/.exec(upToNul)?.[1] ?? (upToNul.includes('parentFileNameHint') ? '(unparsable)' : undefined);
  return { extents, parent };
}

// ---------------------------------------------------------------------------

/** How many bytes of the head of the file to read: a qcow2 header lives in its first cluster (at most 2 MiB). */
const HEAD_BYTES = 2 * 1024 * 1024;

/**
 * Every reference of `path` to another file, read from its own bytes only;
 * `format` is what sniffFile() found. Empty for a self-contained image.
 */
export async function findForeignReferences(path: string, format: 'qcow2' | 'vmdk'): Promise<ForeignReference[]> {
  const fh = await open(path, 'r');
  let head: Buffer;
  try {
    const buf = Buffer.alloc(HEAD_BYTES);
    const { bytesRead } = await fh.read(buf, 0, HEAD_BYTES, 0);
    head = buf.subarray(0, bytesRead);
    if (format === 'qcow2') {
      const h = parseQcow2Header(head);
      if (typeof h === 'string') throw new InputError(`${path} is not a qcow2 image part-image can read: ${h}`);
      if (h.cryptMethod !== 0) throw new InputError(`${path} is an encrypted qcow2 image`, 'Decrypt it first (qemu-img convert with --object secret,...), then verify the plain copy.');
      return qcow2References(h);
    }
    if (head.subarray(0, 4).toString('latin1') !== 'KDMV') {
      // A text descriptor holds no data: every extent it names is another file.
      const d = parseVmdkDescriptor(head.toString('latin1'));
      const refs = d.extents.map((e): ForeignReference => ({ kind: 'extent', target: e }));
      if (d.parent !== undefined) refs.push({ kind: 'parent', target: d.parent });
      if (refs.length === 0) refs.push({ kind: 'descriptor', target: 'a descriptor file with no extent of its own' });
      return refs;
    }
    const h = parseVmdkSparseHeader(head);
    if (typeof h === 'string') throw new InputError(`${path} is not a vmdk image part-image can read: ${h}`);
    if (h.capacity === 0n && h.descOffset !== 0n) {
      // qemu then reads the embedded descriptor as a descriptor file, extents and all.
      const at = Number(h.descOffset) * SECTOR;
      const desc = Buffer.alloc(Math.min(Number(h.descSize) * SECTOR || VMDK_DESC_SIZE, 1 << 20));
      const { bytesRead } = await fh.read(desc, 0, desc.length, at);
      const d = parseVmdkDescriptor(desc.subarray(0, bytesRead).toString('latin1'));
      const refs = d.extents.map((e): ForeignReference => ({ kind: 'extent', target: e }));
      if (d.parent !== undefined) refs.push({ kind: 'parent', target: d.parent });
      if (refs.length === 0) refs.push({ kind: 'descriptor', target: 'a sparse header of capacity 0 that hands over to its embedded descriptor' });
      return refs;
    }
    // A sparse extent is its own data; qemu still looks for a parent in the descriptor at byte 512.
    const d = parseVmdkDescriptor(head.subarray(SECTOR, SECTOR + VMDK_DESC_SIZE).toString('latin1'));
    return d.parent !== undefined ? [{ kind: 'parent', target: d.parent }] : [];
  } finally {
    await fh.close();
  }
}

export function describeReferences(refs: readonly ForeignReference[]): string {
  return refs.map((r) => `${r.kind} ${JSON.stringify(r.target)}`).join(', ');
}
