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
import { createReadStream, type ReadStream } from 'node:fs';
import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import type { Hash } from 'node:crypto';
import { createGunzip, type Gunzip } from 'node:zlib';
import { join } from 'node:path';
import { extract as tarExtract, type Header } from 'tar-stream';
import type { InputTree, ManifestEntry } from '../types.js';
import { isShuttingDown, type Scope } from '../cleanup.js';
import { EnvironmentError, InputError, InterruptedError, PartImageError } from '../errors.js';
import { assignHardlinks, formatMode, makeManifest } from '../manifest/entry.js';
import { AclError, aclTextToXattrHex, aclXattrName, type AclKind, type AclNameResolver } from '../manifest/acl.js';
import { hookRawPax, mergeRecords, paxNumber, paxString, sparse00Map, sparseOf, strictUtf8, xattrsOf, type RawPaxHeader } from './tar-pax.js';
import { BLOCK, TarTree, UNSAFE_HINT, type Inode } from './tar-tree.js';
import { writeBlob } from './tar-blob.js';

export interface ReadTarOptions {
  /** Hash file contents (default true). Blobs are written either way. */
  hash?: boolean;
}

const MiB = 1024 * 1024;
const COMPRESSED_HINT = 'Maybe it is compressed with xz/zstd? Decompress it first.';

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
