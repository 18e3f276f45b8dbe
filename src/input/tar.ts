// Reads a tar archive (plain or gzip-compressed) into the manifest model.
//
// Nothing of the archive is ever recreated on the host: each regular file's
// bytes are streamed into a flat blob and hashed on the way (small files in
// RAM while a budget lasts, the rest in <staging>/blobs/<n>: tar-staging.ts);
// the tree itself only exists as the manifest. Member names are resolved
// against the entries seen so far, and any name that would leave the root (a
// ".." too many, a path through a symlink or a file, a hard link to something
// outside the archive) is refused with an InputError.
//
// tar-stream does the framing (headers, GNU long names, base-256 numbers,
// checksums). Its pax decoder turns every record value into a UTF-8 string,
// which mangles binary xattr values (security.capability, ACLs, any byte
// >= 0x80 that is not valid UTF-8), so we also keep the raw pax records of
// each entry and parse them here: see hookRawPax().
import { createReadStream, type ReadStream } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import { createGunzip, type Gunzip } from 'node:zlib';
import { basename, join } from 'node:path';
import { extract as tarExtract, type Header } from 'tar-stream';
import type { InputTree, ManifestEntry } from '../types.js';
import { isShuttingDown, type Scope } from '../cleanup.js';
import { InputError, InterruptedError, PartImageError } from '../errors.js';
import { formatMode } from '../manifest/entry.js';
import { log } from '../log.js';
import { FILE_SIZE_MAX, checkTreeLimits } from './limits.js';
import { headerNumber, hookRawPax, mergeRecords, paxNumber, paxString, sparse00Map, sparseOf, xattrsOf, type RawPaxHeader } from './tar-pax.js';
import { BLOCK, INODE_COST, TarTree, UNSAFE_HINT, type Inode } from './tar-tree.js';
import { BlobWriter, writeBlob } from './tar-blob.js';
import { TarStaging } from './tar-staging.js';
import { isTarHeader, notATar, refuseCompression, sniff } from './tar-sniff.js';
import { blobError, checkFits, decodeName, describeStreamError, drain, finish, headerMtimeOf } from './tar-finish.js';
export { isTarHeader };

export interface ReadTarOptions {
  /** Hash file contents (default true). Blobs are written either way. */
  hash?: boolean;
  /**
   * The image size (SIZE_MB) in bytes: the read stops, with an InputError, as
   * soon as the tree's apparent size (see TarTree.bytes) exceeds it, before
   * the content of the entry that crosses it is read or hashed.
   */
  maxBytes?: number;
  /** Check the tree against ext4's limits (default true; see input/limits.ts). */
  limits?: boolean;
}

const MiB = 1024 * 1024;
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

// ---------------------------------------------------------------------------
// The reader


/**
 * A numeric header field, exact (tar-stream's own value is off by one for
 * negative base-256 numbers and inexact past 2^53). Out-of-range values come
 * out as they are, and checkTreeLimits() refuses them by name.
 */
function headerField(h: Header & RawPaxHeader, offset: number, length: number, fallback: number | undefined, what: string, member: string): number | undefined {
  if (!h.rawBlock) return fallback;
  let v: bigint | undefined;
  try {
    v = headerNumber(h.rawBlock, offset, length);
  } catch (err) {
    throw new InputError(`tar entry ${JSON.stringify(member)}: its ${what} field is not a number (${(err as Error).message})`, 'The archive is corrupt; re-create it.');
  }
  return v === undefined ? undefined : Number(v);
}

/** Members that are not stored as the archive says, for the read stage's notes. */
class Notes {
  readonly absolute: string[] = [];
  readonly absoluteLinks: string[] = [];

  lines(tree: TarTree): string[] {
    const list = (names: string[]) => names.slice(0, 3).map((n) => JSON.stringify(n)).join(', ') + (names.length > 3 ? ', ...' : '');
    const out: string[] = [];
    if (this.absolute.length) {
      out.push(`removed the leading "/" from ${this.absolute.length} member name(s), as GNU tar does; they are stored under the image's root: ${list(this.absolute)}`);
    }
    if (this.absoluteLinks.length) {
      out.push(`removed the leading "/" from ${this.absoluteLinks.length} hard link target(s), as GNU tar does: ${list(this.absoluteLinks)}`);
    }
    if (tree.replaced.length) {
      out.push(`${tree.replaced.length} member(s) replaced an earlier member of the same name; the later one wins, as on extraction: ${list(tree.replaced.map((r) => r.later))}`);
    }
    return out;
  }
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

/**
 * Reads `path` into the manifest model. Refuses (InputError) what no ext4
 * image can hold as it is (input/limits.ts), members that escape the root,
 * and a non-directory that would replace a directory holding entries; notes
 * in the result what GNU tar would also do silently or with a warning
 * (leading "/" removed, later members replacing earlier ones).
 */
export async function readTarTree(path: string, scope: Scope, opts: ReadTarOptions = {}): Promise<InputTree> {
  const hashing = opts.hash !== false;
  const size = (await stat(path).catch(() => undefined))?.size ?? 0;
  const magic = await sniff(path).catch((err: NodeJS.ErrnoException) => {
    throw new InputError(`cannot read ${path}: ${err.code ?? err.message}`, 'Check the path and its permissions.', err);
  });
  if (magic.length === 0) throw notATar(path, 'the file is empty');
  refuseCompression(path, magic);
  const gzipped = magic[0] === 0x1f && magic[1] === 0x8b && !isTarHeader(magic);

  const stage = await TarStaging.open(scope);
  const staging = stage.disk;

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
  let readBytes = 0;
  file.on('data', (chunk: Buffer | string) => {
    readBytes += chunk.length;
    log.progress(`${(readBytes / MiB).toFixed(0)} of ${(size / MiB).toFixed(0)} MiB of ${basename(path)}, ${entryCount} entries`);
  });
  // The end-of-archive marker: a tar that stops at a block boundary without
  // it has lost its tail, and tar-stream would not notice.
  let tail: Buffer = Buffer.alloc(0);
  source.on('data', (chunk: Buffer) => {
    tail = chunk.length >= BLOCK ? chunk.subarray(chunk.length - BLOCK) : Buffer.concat([tail, chunk]).subarray(-BLOCK);
  });
  source.pipe(extract as unknown as NodeJS.WritableStream);

  const writer = new BlobWriter();
  let emptyBlob: string | undefined;
  let inodeCount = 0;
  let entryCount = 0;
  const notes = new Notes();
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
      if (member.startsWith('/')) notes.absolute.push(member);

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
        if (linkname.startsWith('/')) notes.absoluteLinks.push(linkname);
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
      const uid = paxNumber(pax, 'uid', member) ?? headerField(h, 108, 8, h.uid, 'uid', member) ?? 0;
      const gid = paxNumber(pax, 'gid', member) ?? headerField(h, 116, 8, h.gid, 'gid', member) ?? 0;
      const paxMtime = paxNumber(pax, 'mtime', member);
      const mtime = paxMtime !== undefined ? Math.floor(paxMtime) : headerField(h, 136, 12, headerMtimeOf(h), 'mtime', member);
      const { xattrs, aclText } = xattrsOf(pax, member);
      const hasAclText = Object.keys(aclText).length > 0;

      if (type === 'file') {
        const apparent = sparse ? sparse.realSize : h.size ?? 0;
        if (apparent > FILE_SIZE_MAX) {
          throw new InputError(`tar entry ${JSON.stringify(member)} is a file of ${apparent} bytes; ext4 holds files up to ${FILE_SIZE_MAX} bytes (16 TiB - 4 KiB)`,
            'Remove it from the archive; no ext4 image can hold it.');
        }
        if (opts.maxBytes !== undefined) checkFits(tree.bytes + TarTree.fileCost(apparent) + INODE_COST, opts.maxBytes, member, entryCount);
        // Empty files share one blob: a tar of a million empty members (512
        // bytes each) would otherwise leave a million files to write, and to
        // remove on an interrupt before part-image may exit.
        const empty = !sparse && (h.size ?? 0) === 0;
        if (empty && !emptyBlob) {
          emptyBlob = join(staging, 'empty');
          await writeFile(emptyBlob, '');
        }
        const inode: Inode = {
          id: inodeCount++, blob: '', size: 0, sha256: undefined, mode, uid, gid, mtime, xattrs, refs: 1,
          aclText: hasAclText ? aclText : undefined,
        };
        // A small file staged in RAM gets its hash from the staging's thread, into the inode.
        const written = empty
          ? await drain(data).then(() => ({ blob: emptyBlob!, size: 0, sha256: hashing ? EMPTY_SHA256 : undefined }))
          : await writeBlob(data, stage, h.size ?? 0, sparse, hashing, member, writer, inode).catch((err: unknown) => {
            throw blobError(err, staging);
          });
        inode.blob = written.blob;
        inode.size = written.size;
        inode.sha256 ??= written.sha256;
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
      for (const b of tree.takeBlobsToDrop()) {
        if (b === emptyBlob) continue;
        await writer.settled(b);
        await stage.drop(b);
      }
      if (opts.maxBytes !== undefined) checkFits(tree.bytes, opts.maxBytes, member, entryCount);
    }
    await writer.drain().catch((err: unknown) => {
      throw blobError(err, staging);
    });
    await stage.drain().catch((err: unknown) => {
      throw blobError(err, stage.ramDir ?? staging);
    });
  } catch (err) {
    if (err instanceof PartImageError) throw err;
    if (streamError !== undefined) throw notATar(path, describeStreamError(streamError), streamError);
    // A failed fs call of ours (writing a blob) is not the archive's fault.
    if ((err as NodeJS.ErrnoException)?.syscall !== undefined) throw err;
    throw notATar(path, describeStreamError(err), err);
  } finally {
    file.destroy();
    gunzip?.destroy();
    // No write may still be running when the staging folder is removed.
    await writer.settle();
    await stage.settle();
  }
  if (streamError) throw notATar(path, describeStreamError(streamError), streamError);
  if (!tail.every((b) => b === 0) || tail.length < BLOCK) {
    throw notATar(path, entryCount === 0 ? 'no tar header found' : 'it ends without the end-of-archive marker (truncated?)');
  }

  return { ...(await finish(path, tree, hashing, notes.lines(tree), opts.limits !== false, (b) => stage.final(b))), staged: { ...stage.counts } };
}

