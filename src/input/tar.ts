// Reads a tar archive (plain or gzip-compressed) into the manifest model.
//
// Nothing of the archive is ever recreated on the host: each regular file's
// bytes are streamed into a flat blob (<staging>/blobs/<n>) and hashed on
// the way; the tree itself only exists as the manifest. Member names are
// resolved against the entries seen so far, and any name that would leave
// the root (a ".." too many, a path through a symlink or a file, a hard link
// to something outside the archive) is refused with an InputError.
//
// tar-stream does the framing (headers, GNU long names, base-256 numbers,
// checksums). Its pax decoder turns every record value into a UTF-8 string,
// which mangles binary xattr values (security.capability, ACLs, any byte
// >= 0x80 that is not valid UTF-8), so we also keep the raw pax records of
// each entry and parse them here: see hookRawPax().
import { createReadStream, writeFileSync, type ReadStream } from 'node:fs';
import { mkdir, open, readFile, unlink, type FileHandle } from 'node:fs/promises';
import { createHash, type Hash } from 'node:crypto';
import { createGunzip, type Gunzip } from 'node:zlib';
import { join } from 'node:path';
import { extract as tarExtract, type Extract, type Header } from 'tar-stream';
import type { InputTree, ManifestEntry } from '../types.js';
import { isShuttingDown, type Scope } from '../cleanup.js';
import { EnvironmentError, InputError, InterruptedError, PartImageError } from '../errors.js';
import { assignHardlinks, formatMode, makeManifest } from '../manifest/entry.js';
import { AclError, aclTextToXattrHex, aclXattrName, type AclKind, type AclNameResolver } from '../manifest/acl.js';

export interface ReadTarOptions {
  /** Hash file contents (default true). Blobs are written either way. */
  hash?: boolean;
}

const BLOCK = 512;
const MiB = 1024 * 1024;

const UNSAFE_HINT =
  'The archive would write outside the tree. Re-create it from inside the root (tar -C ROOT -cf ARCHIVE .), or find out where it came from.';
const COMPRESSED_HINT = 'Maybe it is compressed with xz/zstd? Decompress it first.';

// ---------------------------------------------------------------------------
// Raw pax records

/** The pax records of one entry, in archive order (GNU sparse 0.0 repeats keys). */
type PaxRecords = [key: string, value: Buffer][];

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

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

interface RawPaxHeader {
  /** Raw records of the 'x' header that precedes this entry, if any. */
  rawPax?: PaxRecords;
}

/**
 * tar-stream 3.x decodes extended headers in Extract#_decodeLongHeader and
 * attaches them to the next entry in Extract#_applyLongHeaders. We wrap both,
 * on this one instance, to keep the raw bytes as well. If a tar-stream upgrade
 * renames them, this throws at once (and test/input-tar.test.ts fails) rather
 * than silently losing binary xattrs.
 */
function hookRawPax(extract: Extract, onGlobal: (records: PaxRecords) => void): void {
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
  ex._decodeLongHeader = function (this: typeof ex, buf: Buffer) {
    if (this._header.type === 'pax-header') pending = parsePaxRecords(buf);
    else if (this._header.type === 'pax-global-header') onGlobal(parsePaxRecords(buf));
    return decode.call(this, buf);
  };
  ex._applyLongHeaders = function (this: typeof ex) {
    const r = apply.call(this);
    this._header.rawPax = pending;
    pending = undefined;
    return r;
  };
}

/** Last value wins; an empty value deletes the key (pax semantics). */
function mergeRecords(into: Map<string, Buffer>, records: PaxRecords): void {
  for (const [k, v] of records) {
    if (v.length === 0) into.delete(k);
    else into.set(k, v);
  }
}

// ---------------------------------------------------------------------------
// The tree being read

interface Inode {
  id: number;
  blob: string;
  size: number;
  sha256?: string;
  mode: number;
  uid: number;
  gid: number;
  mtime?: number;
  xattrs: Record<string, string>;
  /** ACL texts to convert at the end (see Node.aclText). */
  aclText?: Partial<Record<AclKind, string>>;
  /** Paths that currently name this inode; the blob is dropped when it reaches 0. */
  refs: number;
}

interface Node {
  /** For everything but regular files: the whole entry. For files: path and type only. */
  entry: ManifestEntry;
  inode?: Inode;
  implicit?: boolean;
  /** ACL texts whose names must be resolved once /etc/passwd and /etc/group are read. */
  aclText?: Partial<Record<AclKind, string>>;
  /** The member name as written in the archive, for messages. */
  member: string;
}

class TarTree {
  readonly nodes = new Map<string, Node>();
  private children = new Map<string, Set<string>>();
  private blobsToDrop: string[] = [];

  constructor() {
    // Archives without a "./" entry still have a root.
    this.nodes.set('/', { entry: dirEntry('/'), implicit: true, member: '.' });
  }

  /**
   * Resolves a member name to its manifest path. A leading "/" is taken as
   * relative to the root, as GNU tar does. Refuses a ".." above the root and
   * any path whose traversal passes through a symlink or a non-directory that
   * the archive defined earlier (e.g. "link -> /etc" then "link/passwd").
   */
  resolve(member: string, label = `tar entry ${JSON.stringify(member)}`): string {
    if (member.includes('\0')) throw new InputError(`${label} has a NUL byte in its name`, 'The archive is corrupt or hostile; re-create it.');
    if (member.includes('\n')) {
      throw new InputError(`${label} has a newline in its name`, 'Rename the file in the source tree and re-create the archive; part-image refuses such names.');
    }
    if (member.includes('\uFFFD')) {
      throw new InputError(`${label} has a name that is not valid UTF-8`, 'Rename the file to a UTF-8 name and re-create the archive.');
    }
    const stack: string[] = [];
    const parts = member.split('/').filter((p) => p !== '' && p !== '.');
    for (const [i, part] of parts.entries()) {
      if (part === '..') {
        if (stack.length === 0) {
          throw new InputError(`unsafe ${label}: its ".." leads outside the root`, UNSAFE_HINT);
        }
        stack.pop();
        continue;
      }
      stack.push(part);
      // Every component but the last is traversed: it must be a directory (or not exist yet).
      const traversed = i < parts.length - 1;
      if (!traversed) break;
      const here = '/' + stack.join('/');
      const node = this.nodes.get(here);
      if (node?.entry.type === 'symlink') {
        throw new InputError(
          `unsafe ${label}: it goes through the symlink ${here} -> ${node.entry.target} defined earlier in the archive`,
          UNSAFE_HINT,
        );
      }
      if (node && node.entry.type !== 'dir') {
        throw new InputError(`${label}: ${here} is a ${node.entry.type}, not a directory, earlier in the archive`, 'The archive is inconsistent; re-create it.');
      }
    }
    return stack.length === 0 ? '/' : '/' + stack.join('/');
  }

  /** Creates missing parents of `path` implicitly, as directories 0755 0:0 (tar does the same on extraction). */
  private ensureParents(path: string): void {
    const parts = path.split('/').filter(Boolean);
    let cur = '';
    for (let i = 0; i < parts.length - 1; i++) {
      const parent = cur === '' ? '/' : cur;
      cur = `${cur}/${parts[i]}`;
      if (!this.nodes.has(cur)) {
        this.nodes.set(cur, { entry: dirEntry(cur), implicit: true, member: cur });
        this.link(parent, cur);
      }
    }
  }

  private link(parent: string, path: string): void {
    let set = this.children.get(parent);
    if (!set) this.children.set(parent, (set = new Set()));
    set.add(path);
  }

  private parentOf(path: string): string {
    const i = path.lastIndexOf('/');
    return i <= 0 ? '/' : path.slice(0, i);
  }

  /** Drops `path` (and, for a directory, everything below it). */
  private remove(path: string): void {
    const node = this.nodes.get(path);
    if (!node) return;
    const kids = this.children.get(path);
    if (kids) {
      for (const kid of [...kids]) this.remove(kid);
      this.children.delete(path);
    }
    if (node.inode && --node.inode.refs === 0) this.blobsToDrop.push(node.inode.blob);
    this.nodes.delete(path);
    this.children.get(this.parentOf(path))?.delete(path);
  }

  /** Adds or replaces `path`: the later entry wins, as on extraction. */
  put(path: string, node: Node): void {
    const old = this.nodes.get(path);
    if (path === '/') {
      if (node.entry.type !== 'dir') {
        throw new InputError(`tar entry ${JSON.stringify(node.member)} is the root but is a ${node.entry.type}`, 'The root of the archive must be a directory.');
      }
      this.nodes.set('/', node);
      return;
    }
    if (old && old.entry.type === 'dir' && node.entry.type === 'dir') {
      this.nodes.set(path, node); // a directory listed twice keeps its children
      return;
    }
    if (old) this.remove(path);
    this.ensureParents(path);
    this.nodes.set(path, node);
    this.link(this.parentOf(path), path);
  }

  takeBlobsToDrop(): string[] {
    const b = this.blobsToDrop;
    this.blobsToDrop = [];
    return b;
  }
}

function dirEntry(path: string): ManifestEntry {
  return { path, type: 'dir', mode: '0755', uid: 0, gid: 0 };
}

// ---------------------------------------------------------------------------
// Blobs

interface SparseInfo {
  realSize: number;
  /** The map, from the pax header (0.0, 0.1); undefined when it leads the data (1.0). */
  map?: { offset: number; size: number }[];
}

const ZEROS = Buffer.alloc(64 * 1024);

function hashZeros(hash: Hash, n: number): void {
  while (n > 0) {
    const k = Math.min(n, ZEROS.length);
    hash.update(ZEROS.subarray(0, k));
    n -= k;
  }
}

/** Streams an entry's data into `blob`, hashing on the way. Returns the file's size and hash. */
async function writeBlob(
  data: AsyncIterable<Buffer>, blob: string, storedSize: number, sparse: SparseInfo | undefined, hashing: boolean, member: string,
): Promise<{ size: number; sha256?: string }> {
  const hash = hashing ? createHash('sha256') : undefined;
  if (!sparse) {
    // Small files: one write. Large ones: streamed.
    if (storedSize <= 256 * 1024) {
      const chunks: Buffer[] = [];
      for await (const chunk of data) chunks.push(chunk);
      const buf = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      hash?.update(buf);
      // Synchronous on purpose: thousands of small files, and each async write
      // is three thread-pool round trips (open, write, close) that the tar
      // stream waits for. Measured on the Debian root: see the commit.
      writeFileSync(blob, buf);
      return { size: buf.length, sha256: hash?.digest('hex') };
    }
    const fh = await open(blob, 'w');
    let size = 0;
    try {
      for await (const chunk of data) {
        hash?.update(chunk);
        await writeAll(fh, chunk, null);
        size += chunk.length;
      }
    } finally {
      await fh.close();
    }
    return { size, sha256: hash?.digest('hex') };
  }
  return writeSparseBlob(data, blob, storedSize, sparse, hash, member);
}

async function writeAll(fh: FileHandle, buf: Buffer, position: number | null): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, position === null ? null : position + off);
    off += bytesWritten;
  }
}

/** Parses the GNU sparse 1.0 map that leads the data: decimal lines, padded to a block. */
function parseSparseMap10(buf: Buffer): { map: { offset: number; size: number }[]; length: number } | undefined {
  const numbers: number[] = [];
  let off = 0;
  let count = -1;
  while (count < 0 || numbers.length < 2 * count) {
    const nl = buf.indexOf(0x0a, off);
    if (nl < 0) return undefined;
    const text = buf.toString('latin1', off, nl);
    if (!/^[0-9]{1,16}$/.test(text)) throw new Error('bad GNU sparse 1.0 map');
    const n = Number(text);
    if (count < 0) count = n;
    else numbers.push(n);
    off = nl + 1;
  }
  const length = Math.ceil(off / BLOCK) * BLOCK;
  if (buf.length < length) return undefined;
  const map = [];
  for (let i = 0; i < numbers.length; i += 2) map.push({ offset: numbers[i], size: numbers[i + 1] });
  return { map, length };
}

async function writeSparseBlob(
  data: AsyncIterable<Buffer>, blob: string, storedSize: number, sparse: SparseInfo, hash: Hash | undefined, member: string,
): Promise<{ size: number; sha256?: string }> {
  const bad = (why: string) => new InputError(`tar entry ${JSON.stringify(member)}: bad GNU sparse data: ${why}`, 're-create the archive without --sparse');
  let map = sparse.map;
  let head: Buffer | undefined = map ? undefined : Buffer.alloc(0);
  let seg = 0;
  let segDone = 0;
  let hashed = 0;
  let dataBytes = 0;
  const fh = await open(blob, 'w');
  const checkMap = (m: { offset: number; size: number }[]) => {
    let end = 0;
    let total = 0;
    for (const s of m) {
      if (!Number.isSafeInteger(s.offset) || !Number.isSafeInteger(s.size) || s.offset < end || s.offset + s.size > sparse.realSize) throw bad('the map is out of order or past the end');
      end = s.offset + s.size;
      total += s.size;
    }
    return total;
  };
  let expected = map ? checkMap(map) : -1;
  try {
    for await (let chunk of data) {
      if (!map) {
        head = Buffer.concat([head!, chunk]);
        let parsed;
        try {
          parsed = parseSparseMap10(head);
        } catch {
          throw bad('unreadable map');
        }
        if (!parsed) {
          if (head.length > Math.min(storedSize, 64 * MiB)) throw bad('the map does not end');
          continue;
        }
        map = parsed.map;
        expected = checkMap(map);
        if (parsed.length + expected !== storedSize) throw bad('the map does not match the stored size');
        chunk = head.subarray(parsed.length);
        head = undefined;
      }
      while (chunk.length > 0) {
        while (seg < map.length && segDone === map[seg].size) {
          seg++;
          segDone = 0;
        }
        if (seg >= map.length) throw bad('more data than the map describes');
        const s = map[seg];
        const n = Math.min(chunk.length, s.size - segDone);
        const pos = s.offset + segDone;
        if (hash) {
          hashZeros(hash, pos - hashed);
          hash.update(chunk.subarray(0, n));
          hashed = pos + n;
        }
        await writeAll(fh, chunk.subarray(0, n), pos);
        segDone += n;
        dataBytes += n;
        chunk = chunk.subarray(n);
      }
    }
    if (!map || dataBytes !== expected) throw bad('less data than the map describes');
    if (hash) hashZeros(hash, sparse.realSize - hashed);
    await fh.truncate(sparse.realSize);
  } finally {
    await fh.close();
  }
  return { size: sparse.realSize, sha256: hash?.digest('hex') };
}

// ---------------------------------------------------------------------------
// Entry attributes from the pax records

function paxString(pax: Map<string, Buffer>, key: string, member: string): string | undefined {
  const v = pax.get(key);
  if (v === undefined) return undefined;
  try {
    return strictUtf8.decode(v);
  } catch {
    throw new InputError(`tar entry ${JSON.stringify(member)}: pax ${key} is not valid UTF-8`, 'Rename the file to a UTF-8 name and re-create the archive.');
  }
}

function paxNumber(pax: Map<string, Buffer>, key: string, member: string): number | undefined {
  const v = pax.get(key)?.toString('latin1');
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^-?[0-9]+(\.[0-9]*)?$/.test(v) || !Number.isFinite(n)) {
    throw new InputError(`tar entry ${JSON.stringify(member)}: bad pax ${key} "${v}"`, 'The archive is corrupt; re-create it.');
  }
  return n;
}

function percentDecode(name: string): string {
  if (!name.includes('%')) return name;
  const bytes = Buffer.from(name.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
  return strictUtf8.decode(bytes);
}

interface XattrResult {
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
function xattrsOf(pax: Map<string, Buffer>, member: string): XattrResult {
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

function sparseOf(pax: Map<string, Buffer>, member: string): { sparse?: SparseInfo; name?: string } {
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
function sparse00Map(records: PaxRecords, member: string): { offset: number; size: number }[] {
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

// ---------------------------------------------------------------------------
// The reader

async function sniff(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(6);
    const { bytesRead } = await fh.read(buf, 0, 6, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

function notATar(path: string, why: string, cause?: unknown): InputError {
  return new InputError(`not a valid tar archive: ${path}: ${why} (${COMPRESSED_HINT})`,
    'Give --input a .tar or .tar.gz archive, a directory, or a Raptor layer stack.', cause);
}

function refuseCompression(path: string, magic: Buffer): void {
  const kinds: [number[], string, string][] = [
    [[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], 'xz', 'xz -dk'],
    [[0x28, 0xb5, 0x2f, 0xfd], 'zstd', 'zstd -d'],
    [[0x42, 0x5a, 0x68], 'bzip2', 'bzip2 -dk'],
    [[0x04, 0x22, 0x4d, 0x18], 'lz4', 'lz4 -d'],
  ];
  for (const [bytes, name, cmd] of kinds) {
    if (bytes.every((b, i) => magic[i] === b)) {
      throw new InputError(`not a valid tar archive: ${path} is ${name}-compressed; part-image reads plain and gzip-compressed tars only`,
        `Decompress it first: ${cmd} ${path}`);
    }
  }
}

function headerMtime(h: Header): number | undefined {
  const t = h.mtime?.getTime();
  return t === undefined || Number.isNaN(t) ? undefined : Math.floor(t / 1000);
}

const ENTRY_TYPES: Record<string, ManifestEntry['type']> = {
  'file': 'file',
  'contiguous-file': 'file',
  'directory': 'dir',
  'symlink': 'symlink',
  'character-device': 'char',
  'block-device': 'block',
  'fifo': 'fifo',
};

export async function readTarTree(path: string, scope: Scope, opts: ReadTarOptions = {}): Promise<InputTree> {
  const hashing = opts.hash !== false;
  const magic = await sniff(path).catch((err: NodeJS.ErrnoException) => {
    throw new InputError(`cannot read ${path}: ${err.code ?? err.message}`, 'Check the path and its permissions.', err);
  });
  if (magic.length === 0) throw notATar(path, 'the file is empty');
  refuseCompression(path, magic);
  const gzipped = magic[0] === 0x1f && magic[1] === 0x8b;

  const staging = await scope.tempDir('part-image-tar-');
  const blobDir = join(staging, 'blobs');
  await mkdir(blobDir);

  const tree = new TarTree();
  const globalPax = new Map<string, Buffer>();
  // latin1 keeps the raw bytes of ustar/GNU names; we decode them as UTF-8 ourselves.
  // (tar-stream's own typings omit these two options of extract().)
  const extract = tarExtract({ filenameEncoding: 'latin1', allowUnknownFormat: true } as Parameters<typeof tarExtract>[0]);
  hookRawPax(extract, (records) => mergeRecords(globalPax, records));

  const file: ReadStream = createReadStream(path, { highWaterMark: 256 * 1024 });
  const gunzip: Gunzip | undefined = gzipped ? createGunzip() : undefined;
  const source = gunzip ? file.pipe(gunzip) : file;
  let streamError: unknown;
  const fail = (err: unknown) => {
    streamError ??= err;
    extract.destroy(err as Error);
  };
  file.on('error', fail);
  gunzip?.on('error', fail);
  // The end-of-archive marker: a tar that stops at a block boundary without
  // it has lost its tail, and tar-stream would not notice.
  let tail: Buffer = Buffer.alloc(0);
  source.on('data', (chunk: Buffer) => {
    tail = chunk.length >= BLOCK ? chunk.subarray(chunk.length - BLOCK) : Buffer.concat([tail, chunk]).subarray(-BLOCK);
  });
  source.pipe(extract as unknown as NodeJS.WritableStream);

  let blobCount = 0;
  let inodeCount = 0;
  let entryCount = 0;
  try {
    for await (const entry of extract) {
      // On an interrupt the staging folder is being removed: stop writing into it.
      if (isShuttingDown()) throw new InterruptedError('signal');
      entryCount++;
      const h = entry.header as Header & RawPaxHeader;
      const data = entry as unknown as AsyncIterable<Buffer>;
      const pax = new Map(globalPax);
      if (h.rawPax) mergeRecords(pax, h.rawPax);
      let name = paxString(pax, 'path', h.name) ?? decodeName(h.name, 'name');
      const { sparse, name: sparseName } = sparseOf(pax, name);
      if (sparseName !== undefined) name = sparseName;
      if (sparse && sparse.map?.length === 0 && !pax.has('GNU.sparse.map')) sparse.map = sparse00Map(h.rawPax ?? [], name);
      const linkname = paxString(pax, 'linkpath', name) ?? (h.linkname ? decodeName(h.linkname, 'link target', name) : '');
      const member = name;

      if (h.type === 'link') {
        const p = tree.resolve(member);
        const targetPath = tree.resolve(linkname, `tar entry ${JSON.stringify(member)} (hard link to ${JSON.stringify(linkname)})`);
        const target = tree.nodes.get(targetPath);
        if (!target || target.implicit) {
          throw new InputError(
            `unsafe tar entry ${JSON.stringify(member)}: it is a hard link to ${JSON.stringify(linkname)}, which is not earlier in the archive`,
            UNSAFE_HINT,
          );
        }
        if (target.entry.type === 'dir') throw new InputError(`tar entry ${JSON.stringify(member)} is a hard link to the directory ${targetPath}`, 'The archive is corrupt; re-create it.');
        await drain(data);
        if (target.inode) {
          target.inode.refs++;
          tree.put(p, { entry: { path: p, type: 'file', mode: '', uid: 0, gid: 0 }, inode: target.inode, member });
        } else {
          tree.put(p, { entry: { ...target.entry, path: p }, aclText: target.aclText, member });
        }
        continue;
      }

      const type = h.type ? ENTRY_TYPES[h.type] : undefined;
      if (!type) {
        await drain(data);
        throw new InputError(
          `tar entry ${JSON.stringify(member)} has a type part-image cannot store (${h.type ?? 'unknown type flag: a GNU volume label, multi-volume part, or old GNU sparse file?'})`,
          'Re-create the archive with GNU tar --format=pax or bsdtar, without --sparse or --multi-volume.',
        );
      }
      const p = tree.resolve(member);
      if (sparse && type !== 'file') throw new InputError(`tar entry ${JSON.stringify(member)} has GNU sparse records but is a ${type}`, 'Re-create the archive without --sparse.');
      const mode = (h.mode ?? 0) & 0o7777;
      const uid = paxNumber(pax, 'uid', member) ?? h.uid ?? 0;
      const gid = paxNumber(pax, 'gid', member) ?? h.gid ?? 0;
      const paxMtime = paxNumber(pax, 'mtime', member);
      const mtime = paxMtime !== undefined ? Math.floor(paxMtime) : headerMtime(h);
      const { xattrs, aclText } = xattrsOf(pax, member);
      const hasAclText = Object.keys(aclText).length > 0;

      if (type === 'file') {
        const blob = join(blobDir, String(blobCount++));
        const written = await writeBlob(data, blob, h.size ?? 0, sparse, hashing, member).catch((err: unknown) => {
          throw blobError(err, staging);
        });
        const inode: Inode = {
          id: inodeCount++, blob, size: written.size, sha256: written.sha256, mode, uid, gid, mtime, xattrs, refs: 1,
          aclText: hasAclText ? aclText : undefined,
        };
        tree.put(p, { entry: { path: p, type: 'file', mode: '', uid, gid }, inode, member });
      } else {
        await drain(data);
        const e: ManifestEntry = { path: p, type, mode: formatMode(mode), uid, gid, xattrs, mtime };
        if (type === 'symlink') {
          if (linkname === '') throw new InputError(`tar entry ${JSON.stringify(member)} is a symlink with an empty target`, 'Linux cannot store such a symlink; fix the source tree and re-create the archive.');
          e.target = linkname;
          e.size = Buffer.byteLength(linkname);
        }
        if (type === 'char' || type === 'block') e.rdev = `${h.devmajor ?? 0},${h.devminor ?? 0}`;
        tree.put(p, { entry: e, aclText: hasAclText ? aclText : undefined, member });
      }
      for (const b of tree.takeBlobsToDrop()) await unlink(b).catch(() => undefined);
    }
  } catch (err) {
    if (err instanceof PartImageError) throw err;
    if (streamError !== undefined) throw notATar(path, describeStreamError(streamError), streamError);
    // A failed fs call of ours (writing a blob) is not the archive's fault.
    if ((err as NodeJS.ErrnoException)?.syscall !== undefined) throw err;
    throw notATar(path, describeStreamError(err), err);
  } finally {
    file.destroy();
    gunzip?.destroy();
  }
  if (streamError) throw notATar(path, describeStreamError(streamError), streamError);
  if (!tail.every((b) => b === 0) || tail.length < BLOCK) {
    throw notATar(path, entryCount === 0 ? 'no tar header found' : 'it ends without the end-of-archive marker (truncated?)');
  }

  return finish(path, tree, hashing);
}

/** A ustar/GNU name field (read as latin1 by tar-stream) decoded as strict UTF-8. */
function decodeName(latin1: string, what: string, member?: string): string {
  const raw = Buffer.from(latin1, 'latin1');
  try {
    return strictUtf8.decode(raw);
  } catch {
    throw new InputError(`tar entry ${JSON.stringify(member ?? raw.toString('utf8'))}: its ${what} is not valid UTF-8`, 'Rename the file to a UTF-8 name and re-create the archive.');
  }
}

async function drain(entry: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of entry) { /* skip */ }
}

function describeStreamError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'Z_BUF_ERROR' || /unexpected end of file/i.test(e?.message ?? '')) return 'the gzip stream is truncated';
  if (e?.code?.startsWith?.('Z_')) return `bad gzip data (${e.message})`;
  if (/Unexpected end of data/.test(e?.message ?? '')) return 'it ends in the middle of an entry (truncated?)';
  if (/Invalid tar header/.test(e?.message ?? '')) return 'bad tar header checksum (corrupt, or not a tar)';
  return e?.message ?? String(err);
}

function blobError(err: unknown, staging: string): unknown {
  if (err instanceof PartImageError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') {
    return new EnvironmentError(`no space left for the archive's contents in ${staging}`, 'Point TMPDIR at a larger filesystem.', err);
  }
  return err;
}

/** Builds a name resolver from the archive's own /etc/passwd and /etc/group. */
async function archiveNameResolver(tree: TarTree): Promise<AclNameResolver> {
  const table = async (path: string): Promise<Map<string, number>> => {
    const map = new Map<string, number>();
    const blob = tree.nodes.get(path)?.inode?.blob;
    if (!blob) return map;
    for (const line of (await readFile(blob, 'utf8')).split('\n')) {
      const f = line.split(':');
      if (f.length >= 3 && /^[0-9]+$/.test(f[2])) map.set(f[0], Number(f[2]));
    }
    return map;
  };
  const users = await table('/etc/passwd');
  const groups = await table('/etc/group');
  return (kind, name) => (kind === 'user' ? users : groups).get(name);
}

async function finish(source: string, tree: TarTree, hashing: boolean): Promise<InputTree> {
  const entries: ManifestEntry[] = [];
  const content = new Map<string, string>();
  const inodeOf = new Map<string, number>();
  const inodes = new Map<number, Inode>();
  let resolver: AclNameResolver | undefined;
  let usedBytes = 0;

  for (const [p, node] of tree.nodes) {
    let e: ManifestEntry;
    if (node.inode) {
      const ino = node.inode;
      e = { path: p, type: 'file', mode: formatMode(ino.mode), uid: ino.uid, gid: ino.gid, size: ino.size, xattrs: { ...ino.xattrs }, mtime: ino.mtime };
      if (hashing) e.sha256 = ino.sha256;
      content.set(p, ino.blob);
      inodeOf.set(p, ino.id);
      inodes.set(ino.id, ino);
    } else {
      e = { ...node.entry, xattrs: { ...(node.entry.xattrs ?? {}) } };
      if (e.type === 'dir') usedBytes += 4096;
      if (e.type === 'symlink' && (e.size ?? 0) >= 60) usedBytes += 4096;
    }
    const aclText = node.inode ? node.inode.aclText : node.aclText;
    if (aclText) {
      for (const [kind, text] of Object.entries(aclText) as [AclKind, string][]) {
        if (e.xattrs![aclXattrName(kind)] !== undefined) continue;
        resolver ??= await archiveNameResolver(tree);
        try {
          const hex = aclTextToXattrHex(text, kind, resolver);
          if (hex !== undefined) e.xattrs![aclXattrName(kind)] = hex;
        } catch (err) {
          if (!(err instanceof AclError)) throw err;
          throw new InputError(`tar entry ${JSON.stringify(node.member)}: SCHILY.acl.${kind}: ${err.message}`,
            "Re-create the archive with GNU tar --xattrs --xattrs-include='*' (which stores the raw ACL) or with bsdtar --acls (which stores numeric ids).");
        }
      }
    }
    entries.push(e);
  }
  for (const ino of inodes.values()) usedBytes += Math.ceil(ino.size / 4096) * 4096;
  assignHardlinks(entries, (e) => {
    const id = inodeOf.get(e.path);
    return id === undefined ? undefined : String(id);
  });
  return {
    kind: 'tar',
    source,
    manifest: makeManifest(entries),
    content,
    usedMb: Math.ceil(usedBytes / MiB),
  };
}
