// The pax extended headers of a tar entry, read from their raw bytes: xattrs
// (SCHILY/LIBARCHIVE), ACL text, GNU sparse maps, path/uid/gid/mtime overrides.
import type { Extract } from 'tar-stream';
import { InputError, PartImageError } from '../errors.js';
import { aclXattrName, type AclKind } from '../manifest/acl.js';
import type { SparseInfo } from './tar-blob.js';

// ---------------------------------------------------------------------------
// Raw pax records

/** The pax records of one entry, in archive order (GNU sparse 0.0 repeats keys). */
export type PaxRecords = [key: string, value: Buffer][];

export const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Parses an extended header block: "<len> <key>=<value>\n" records, values kept as bytes. */
export function parsePaxRecords(buf: Buffer): PaxRecords {
  const records: PaxRecords = [];
  let off = 0;
  while (off < buf.length) {
    if (buf[off] === 0) break; // NUL padding after the last record
    const space = buf.indexOf(0x20, off);
    const lenText = space > off ? buf.toString('latin1', off, space) : '';
    if (!/^[0-9]{1,9}$/.test(lenText)) throw new Error(`bad pax record length at byte ${off}`);
    const len = Number(lenText);
    const end = off + len;
    if (end > buf.length || buf[end - 1] !== 0x0a || len <= space - off + 1) throw new Error(`bad pax record at byte ${off}`);
    const eq = buf.indexOf(0x3d, space + 1);
    if (eq < 0 || eq >= end - 1) throw new Error(`pax record without "=" at byte ${off}`);
    const key = strictUtf8.decode(buf.subarray(space + 1, eq));
    records.push([key, Buffer.from(buf.subarray(eq + 1, end - 1))]);
    off = end;
  }
  return records;
}

export interface RawPaxHeader {
  /** Raw records of the 'x' header that precedes this entry, if any. */
  rawPax?: PaxRecords;
  /** The entry's own 512-byte header block, for numbers tar-stream decodes wrongly (see headerNumber()). */
  rawBlock?: Buffer;
}

/**
 * A numeric field of a tar header: octal text, or GNU base-256 (first byte
 * 0x80 positive, 0xff negative, two's complement). tar-stream 3.2 decodes a
 * negative base-256 value one too close to zero (-1 reads as 0), and a large
 * one as an inexact double; this is exact (BigInt), and undefined for an
 * empty field. Throws on garbage.
 */
export function headerNumber(block: Buffer, offset: number, length: number): bigint | undefined {
  const f = block.subarray(offset, offset + length);
  if (f[0] === 0x80 || f[0] === 0xff) {
    let v = 0n;
    for (let i = 1; i < f.length; i++) v = (v << 8n) | BigInt(f[i]);
    if (f[0] === 0xff) v -= 1n << BigInt(8 * (f.length - 1));
    return v;
  }
  const text = f.toString('latin1').replace(/\0.*$/s, '').trim();
  if (text === '') return undefined;
  if (!/^[0-7]+$/.test(text)) throw new Error(`bad number ${JSON.stringify(text)} at header byte ${offset}`);
  return BigInt(`0o${text}`);
}

/**
 * tar-stream 3.x decodes extended headers in Extract#_decodeLongHeader and
 * attaches them to the next entry in Extract#_applyLongHeaders. We wrap both,
 * on this one instance, to keep the raw bytes as well. If a tar-stream upgrade
 * renames them, this throws at once (and test/input-tar.test.ts fails) rather
 * than silently losing binary xattrs.
 */
export function hookRawPax(extract: Extract, onGlobal: (records: PaxRecords) => void): void {
  const ex = extract as unknown as {
    _decodeLongHeader?: (buf: Buffer) => unknown;
    _applyLongHeaders?: () => unknown;
    _header: { type: string | null } & RawPaxHeader;
  };
  const decode = ex._decodeLongHeader;
  const apply = ex._applyLongHeaders;
  if (typeof decode !== 'function' || typeof apply !== 'function') {
    throw new Error('tar-stream internals changed (_decodeLongHeader/_applyLongHeaders); raw pax records cannot be read');
  }
  let pending: PaxRecords | undefined;
  // The entry's header block is the last 512 bytes _consumeHeader shifted
  // before it calls _applyLongHeaders (long headers are shifted in between,
  // but always before their entry's own block).
  let lastBlock: Buffer | undefined;
  const buffer = (ex as unknown as { _buffer?: { shift?: (n: number) => Buffer | null } })._buffer;
  const shift = buffer?.shift;
  if (!buffer || typeof shift !== 'function') throw new Error('tar-stream internals changed (_buffer.shift); raw tar headers cannot be read');
  buffer.shift = function (this: unknown, n: number) {
    const b = shift.call(this, n);
    if (n === 512 && b) lastBlock = Buffer.from(b);
    return b;
  };
  ex._decodeLongHeader = function (this: typeof ex, buf: Buffer) {
    if (this._header.type === 'pax-header') pending = parsePaxRecords(buf);
    else if (this._header.type === 'pax-global-header') onGlobal(parsePaxRecords(buf));
    return decode.call(this, buf);
  };
  ex._applyLongHeaders = function (this: typeof ex) {
    const r = apply.call(this);
    this._header.rawPax = pending;
    this._header.rawBlock = lastBlock;
    pending = undefined;
    return r;
  };
}

/** Last value wins; an empty value deletes the key (pax semantics). */
export function mergeRecords(into: Map<string, Buffer>, records: PaxRecords): void {
  for (const [k, v] of records) {
    if (v.length === 0) into.delete(k);
    else into.set(k, v);
  }
}

// ---------------------------------------------------------------------------
// Entry attributes from the pax records

export function paxString(pax: Map<string, Buffer>, key: string, member: string): string | undefined {
  const v = pax.get(key);
  if (v === undefined) return undefined;
  try {
    return strictUtf8.decode(v);
  } catch {
    throw new InputError(`tar entry ${JSON.stringify(member)}: pax ${key} is not valid UTF-8`, 'Rename the file to a UTF-8 name and re-create the archive.');
  }
}

export function paxNumber(pax: Map<string, Buffer>, key: string, member: string): number | undefined {
  const v = pax.get(key)?.toString('latin1');
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^-?[0-9]+(\.[0-9]*)?$/.test(v) || !Number.isFinite(n)) {
    throw new InputError(`tar entry ${JSON.stringify(member)}: bad pax ${key} "${v}"`, 'The archive is corrupt; re-create it.');
  }
  return n;
}

export function percentDecode(name: string): string {
  if (!name.includes('%')) return name;
  const bytes = Buffer.from(name.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
  return strictUtf8.decode(bytes);
}

export interface XattrResult {
  xattrs: Record<string, string>;
  aclText: Partial<Record<AclKind, string>>;
}

/**
 * xattrs from SCHILY.xattr.NAME (raw value; GNU tar and bsdtar percent-encode
 * "=", "%" and other bytes of the name) and LIBARCHIVE.xattr.NAME (name
 * percent-encoded, value base64). POSIX ACLs come as raw
 * system.posix_acl_* xattrs (GNU tar --xattrs) or as text in
 * SCHILY.acl.access / SCHILY.acl.default (GNU tar --acls, bsdtar --acls); the
 * raw value wins when both are there. RHT.security.selinux (tar --selinux)
 * becomes security.selinux, NUL-terminated as libselinux writes it.
 */
export function xattrsOf(pax: Map<string, Buffer>, member: string): XattrResult {
  const schily: Record<string, string> = {};
  const libarchive: Record<string, string> = {};
  const aclText: Partial<Record<AclKind, string>> = {};
  let selinux: string | undefined;
  for (const [key, value] of pax) {
    try {
      if (key.startsWith('SCHILY.xattr.')) {
        schily[percentDecode(key.slice('SCHILY.xattr.'.length))] = value.toString('hex');
      } else if (key.startsWith('LIBARCHIVE.xattr.')) {
        libarchive[percentDecode(key.slice('LIBARCHIVE.xattr.'.length))] = Buffer.from(value.toString('latin1'), 'base64').toString('hex');
      } else if (key === 'SCHILY.acl.access') {
        aclText.access = strictUtf8.decode(value);
      } else if (key === 'SCHILY.acl.default') {
        aclText.default = strictUtf8.decode(value);
      } else if (key === 'SCHILY.acl.ace') {
        throw new InputError(`tar entry ${JSON.stringify(member)} carries an NFSv4 ACL (SCHILY.acl.ace), which ext4 cannot store`, 'Re-create the archive without --acls, or from a filesystem with POSIX ACLs.');
      } else if (key === 'RHT.security.selinux') {
        selinux = Buffer.concat([value, Buffer.from([0])]).toString('hex');
      }
    } catch (err) {
      if (err instanceof PartImageError) throw err;
      throw new InputError(`tar entry ${JSON.stringify(member)}: the pax record ${JSON.stringify(key)} is not valid UTF-8`, 'The archive is corrupt; re-create it.');
    }
  }
  const xattrs: Record<string, string> = { ...libarchive, ...schily };
  if (selinux !== undefined && xattrs['security.selinux'] === undefined) xattrs['security.selinux'] = selinux;
  for (const kind of ['access', 'default'] as const) {
    if (xattrs[aclXattrName(kind)] !== undefined) delete aclText[kind];
  }
  return { xattrs, aclText };
}

export function sparseOf(pax: Map<string, Buffer>, member: string): { sparse?: SparseInfo; name?: string } {
  const keys = [...pax.keys()].filter((k) => k.startsWith('GNU.sparse.'));
  if (keys.length === 0) return {};
  const name = paxString(pax, 'GNU.sparse.name', member);
  const refuse = (why: string) =>
    new InputError(`tar entry ${JSON.stringify(name ?? member)} is a GNU sparse file (${why})`, 'Re-create the archive without --sparse.');
  const major = pax.get('GNU.sparse.major')?.toString('latin1');
  const minor = pax.get('GNU.sparse.minor')?.toString('latin1');
  if (major !== undefined || minor !== undefined) {
    if (major !== '1' || minor !== '0') throw refuse(`format ${major}.${minor} is not supported`);
    const realSize = paxNumber(pax, 'GNU.sparse.realsize', member);
    if (realSize === undefined || !Number.isSafeInteger(realSize) || realSize < 0) throw refuse('no GNU.sparse.realsize');
    return { sparse: { realSize }, name };
  }
  const realSize = paxNumber(pax, 'GNU.sparse.size', member);
  if (realSize === undefined || !Number.isSafeInteger(realSize) || realSize < 0) throw refuse('no GNU.sparse.size');
  const mapText = pax.get('GNU.sparse.map')?.toString('latin1');
  if (mapText !== undefined) {
    // 0.1: the map as "offset,size,offset,size..."
    const nums = mapText === '' ? [] : mapText.split(',').map(Number);
    if (nums.length % 2 !== 0 || nums.some((n) => !Number.isSafeInteger(n) || n < 0)) throw refuse('bad GNU.sparse.map');
    const map = [];
    for (let i = 0; i < nums.length; i += 2) map.push({ offset: nums[i], size: nums[i + 1] });
    return { sparse: { realSize, map }, name };
  }
  return { sparse: { realSize, map: [] }, name }; // 0.0: the map comes from the record list, see sparse00Map()
}

/** GNU sparse 0.0 repeats GNU.sparse.offset / GNU.sparse.numbytes, so it needs the ordered records. */
export function sparse00Map(records: PaxRecords, member: string): { offset: number; size: number }[] {
  const map: { offset: number; size: number }[] = [];
  let offset: number | undefined;
  for (const [k, v] of records) {
    if (k === 'GNU.sparse.offset') offset = Number(v.toString('latin1'));
    else if (k === 'GNU.sparse.numbytes') {
      const size = Number(v.toString('latin1'));
      if (offset === undefined || !Number.isSafeInteger(offset) || !Number.isSafeInteger(size)) {
        throw new InputError(`tar entry ${JSON.stringify(member)} has a bad GNU sparse 0.0 map`, 'Re-create the archive without --sparse.');
      }
      map.push({ offset, size });
      offset = undefined;
    }
  }
  return map;
}

