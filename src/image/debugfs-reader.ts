// Reads an ext2/3/4 image into the manifest model without mounting it and
// without privilege, through a handful of batched debugfs processes.
//
// The tree is walked level by level. For each directory depth two debugfs
// processes run side by side:
//   - `ls -p <INODE>` for every directory of that depth (inode file specs: no
//     quoting, no path lookups);
//   - `stat <INODE>` for every inode the previous level's listings found (mode,
//     owner, size, links, mtime, xattrs, device numbers, fast symlink targets,
//     extent maps).
// While the next level's processes run, the contents of the files whose stat
// just arrived are hashed in-process, straight from the image file through
// their extent maps: holes and unwritten extents read as zeros, the last block
// is cut at the file size. Long symlink targets (60 bytes and more) are read
// the same way.
//
// Only when needed, at the end: `ea_get -r -x` for the xattr values of 40
// bytes and more (stat prints only their length), and `dump <INODE> FILE` for
// contents without a block map (inline data).
//
// The block size comes from the superblock, read from the image file. Before
// any debugfs runs, the superblock is checked the way the kernel checks it at
// mount (image/superblock.ts): debugfs itself ignores checksum errors and a
// file shorter than the block count.
//
// A damaged image is bad input, not a tool failure: debugfs exits 0 and prints
// errors ("Corrupt extent header", "Inode checksum does not match inode", "A
// block group is missing an inode table"), and the reader turns every such
// error into an UnreadableImageError (exit 2 for manifest and diff, an
// `unreadable` finding in verify's stages), naming what could not be read.
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, openSync, readSync } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Manifest, ManifestEntry } from '../types.js';
import { checkNotInterrupted, settleAll, withScope } from '../cleanup.js';
import { InputError, ToolError } from '../errors.js';
import { log } from '../log.js';
import { readExt4Superblock, superblockProblems, type Ext4Superblock } from './superblock.js';
import { UnreadableImageError } from './unreadable.js';

export { UnreadableImageError } from './unreadable.js';
import { assignHardlinks, childPath, formatMode, makeManifest, typeFromMode } from '../manifest/entry.js';
import {
  aclDiskToXattr,
  isAclXattr,
  parseEaGetHex,
  parseLsPSections,
  parseStatSections,
  quoteDebugfsArg,
  runDebugfs,
  splitDebugfsOutput,
  type DebugfsResult,
  type InodeStat,
  type LsSection,
} from '../tools/debugfs.js';

export interface ImageReadOptions {
  /** Hash regular file contents (default true). Symlink targets are read either way. */
  hash?: boolean;
  /** The name to give the image in messages (the user's file when `image` is a raw copy of a qcow2/vmdk). */
  name?: string;
}

/** Damage found deep in the reader; readImageManifest() names the image. */
class Damage extends Error {}

const ROOT_INO = 2;
const EXT4_INLINE_DATA_FL = 0x10000000;
const EXT4_ENCRYPT_FL = 0x800;
/** Most commands per debugfs process; a bigger batch is split over processes run side by side. */
const BATCH = 4000;
/** Bytes of fallback `dump` output kept on disk at once. */
const DUMP_BATCH_BYTES = 256 * 1024 * 1024;
const READ_CHUNK = 1024 * 1024;

interface Node {
  path: string;
  ino: number;
}

/** What was read per inode, beyond its stat. */
interface Content {
  sha256?: string;
  target?: string;
}

/** The manifest of an ext2/3/4 image, read rootless through debugfs. */
export async function readImageManifest(image: string, opts: ImageReadOptions = {}): Promise<Manifest> {
  const name = opts.name ?? image;
  try {
    return await readManifest(image, opts.hash ?? true);
  } catch (err) {
    if (err instanceof Damage) throw new UnreadableImageError(name, err.message, err);
    // debugfs could not open the filesystem at all (bad group descriptors, a corrupt superblock).
    const openError = err instanceof ToolError ? OPEN_ERROR.exec(err.stderr) : null;
    if (openError) throw new UnreadableImageError(name, `debugfs cannot open it: ${openError[1].trim()}`, err);
    throw err;
  }
}

const OPEN_ERROR = /^(?:debugfs: )?(.*) while (?:trying to open|opening filesystem).*$/m;

async function readManifest(image: string, hash: boolean): Promise<Manifest> {
  const img = resolve(image);
  const st = await stat(img).catch(() => {
    throw new InputError(`image not found: ${image}`);
  });
  if (!st.isFile() && !st.isBlockDevice()) throw new InputError(`not an image file: ${image}`);
  const { blockSize, blockCount } = await checkedSuperblock(img);

  const nodes: Node[] = [{ path: '/', ino: ROOT_INO }];
  const stats = new Map<number, InodeStat>();
  const content = new Map<number, Content>();
  const fallback: InodeStat[] = [];
  const seenDirs = new Set<number>([ROOT_INO]);
  const requested = new Set<number>([ROOT_INO]);
  const reader = new BlockReader(img, blockSize, blockCount);
  let pending: Promise<LevelResult> | undefined;
  try {
    let dirs: Node[] = [{ path: '/', ino: ROOT_INO }];
    const pathOf = new Map<number, string>([[ROOT_INO, '/']]);
    pending = startLevel(img, dirs, [ROOT_INO], pathOf);
    while (pending) {
      const { listings, inodes } = await pending;
      // Children of this level: the next level's directories and inodes.
      const nextDirs: Node[] = [];
      const newInodes: number[] = [];
      for (const dir of dirs) {
        const section = listings.get(dir.ino)!;
        for (const e of section.entries) {
          const path = childPath(dir.path, e.name);
          nodes.push({ path, ino: e.inode });
          if (!pathOf.has(e.inode)) pathOf.set(e.inode, path);
          if (!requested.has(e.inode)) {
            requested.add(e.inode);
            newInodes.push(e.inode);
          }
          if ((e.mode & 0o170000) === 0o040000) {
            if (seenDirs.has(e.inode)) throw new Damage(`directory inode ${e.inode} is linked twice (again at ${path})`);
            seenDirs.add(e.inode);
            nextDirs.push({ path, ino: e.inode });
          }
        }
      }
      dirs = nextDirs;
      pending = nextDirs.length > 0 || newInodes.length > 0 ? startLevel(img, nextDirs, newInodes, pathOf) : undefined;
      // Awaited on the next turn; until then a failure must not count as unhandled.
      pending?.catch(() => undefined);
      // Hash what this level's stat brought while the next level runs.
      for (const s of inodes) stats.set(s.inode, s);
      log.progress(`${stats.size} inodes read${hash ? ', hashing' : ''}`);
      await readContents(reader, inodes, hash, content, fallback);
    }
  } finally {
    reader.close();
    // A failure while the next level ran (hashing this one) must not leave its batches, and their temp dirs, behind.
    await pending?.catch(() => undefined);
  }
  await fillLongXattrs(img, stats);
  if (fallback.length > 0) await dumpContents(img, fallback, content);

  const entries: ManifestEntry[] = [];
  const inoOf = new Map<string, number>();
  for (const node of nodes) {
    const s = stats.get(node.ino);
    if (!s) throw new Error(`inode ${node.ino} of ${node.path} was not read`);
    const entry: ManifestEntry = { path: node.path, type: typeFromMode(s.mode), mode: formatMode(s.mode), uid: s.uid, gid: s.gid };
    const c = content.get(node.ino);
    if (entry.type === 'file') {
      entry.size = s.size;
      if (hash) entry.sha256 = c?.sha256;
    } else if (entry.type === 'symlink') {
      entry.size = s.size;
      entry.target = c?.target;
    } else if ((entry.type === 'char' || entry.type === 'block') && s.rdev) {
      entry.rdev = `${s.rdev.major},${s.rdev.minor}`;
    }
    const xattrs = manifestXattrs(s, node.path);
    if (Object.keys(xattrs).length > 0) entry.xattrs = xattrs;
    if (s.mtime !== undefined) entry.mtime = s.mtime;
    entries.push(entry);
    inoOf.set(node.path, node.ino);
  }
  assignHardlinks(entries, (e) => String(inoOf.get(e.path)));
  return makeManifest(entries);
}

/**
 * The block size, once the superblock passed the kernel's own mount checks
 * (magic, block size, checksum, features, a journal to replay, a file as
 * long as the block count says).
 */
async function checkedSuperblock(image: string): Promise<Ext4Superblock> {
  const r = await readExt4Superblock(image);
  if (!r.superblock) throw new Damage(r.notExt4!);
  const problems = superblockProblems(r.superblock, r.fileSize);
  if (problems.length > 0) throw new Damage(problems.map((p) => p.message).join('; '));
  return r.superblock;
}

// ---------------------------------------------------------------------------
// One level: listings and inodes, in processes run side by side

interface LevelResult {
  listings: Map<number, LsSection>;
  inodes: InodeStat[];
}

async function startLevel(image: string, dirs: Node[], inodes: number[], pathOf: Map<number, string>): Promise<LevelResult> {
  const lsJobs = chunks(dirs, BATCH).map((part) => listDirs(image, part));
  const statJobs = chunks(inodes, BATCH).map((part) => statInodes(image, part, pathOf));
  // settleAll: every batch has ended (and removed its temp dir) before one's failure leaves.
  const lists = settleAll(lsJobs);
  const stats = settleAll(statJobs);
  await settleAll<unknown>([lists, stats]);
  return { listings: new Map((await lists).flatMap((m) => [...m])), inodes: (await stats).flat() };
}

function chunks<T>(items: T[], size: number): T[][] {
  const n = Math.ceil(items.length / size);
  const per = Math.ceil(items.length / Math.max(1, n));
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += per) out.push(items.slice(i, i + per));
  return out;
}

// ls and stat run with stderr merged into stdout: an error lands in the
// section of the command that caused it, so it can name the path.

async function listDirs(image: string, dirs: Node[]): Promise<Map<number, LsSection>> {
  const cmds = dirs.map((d) => `ls -p <${d.ino}>`);
  const res = await runDebugfs(image, cmds, { mergeStderr: true });
  failOnPreamble(res);
  const out = new Map<number, LsSection>();
  for (const section of parseLsPSections(res.raw)) {
    const m = /^ls -p <(\d+)>$/.exec(section.command);
    // The first section of a command is the real one (an echo line inside a name comes later).
    if (!m || out.has(Number(m[1]))) continue;
    out.set(Number(m[1]), section);
  }
  for (const dir of dirs) {
    const section = out.get(dir.ino);
    if (!section || section.errors.length > 0) {
      throw new Damage(`cannot list directory ${dir.path} (inode ${dir.ino}): ${firstError(section?.errors)}`);
    }
  }
  return out;
}

async function statInodes(image: string, inos: number[], pathOf: Map<number, string>): Promise<InodeStat[]> {
  const cmds = inos.map((ino) => `stat <${ino}>`);
  const res = await runDebugfs(image, cmds, { mergeStderr: true });
  failOnPreamble(res);
  const byIno = new Map<number, { stat?: InodeStat; errors: string[] }>();
  for (const section of parseStatSections(res.raw)) {
    const m = /^stat <(\d+)>$/.exec(section.command);
    if (!m || byIno.has(Number(m[1]))) continue;
    byIno.set(Number(m[1]), section);
  }
  return inos.map((ino) => {
    const s = byIno.get(ino);
    if (!s?.stat || s.stat.inode !== ino || s.errors.length > 0) {
      throw new Damage(`cannot read inode ${ino} (${pathOf.get(ino) ?? 'path unknown'}): ${firstError(s?.errors)}`);
    }
    return s.stat;
  });
}

/**
 * debugfs's first words on what went wrong, without the command-name prefix
 * it adds ("ls: ", "-p: " after getopt, "stat: "). After the first error a
 * section holds whatever debugfs printed anyway (the rest of a half-read
 * inode), which says nothing more.
 */
function firstError(errors: string[] | undefined): string {
  const lines = (errors ?? []).map((e) => e.replace(/^(?:-\w|[a-z_]+): /, '').trim()).filter((e) => e !== '');
  return lines[0] ?? 'debugfs printed nothing for it';
}

/** debugfs exits 0 whatever happens; anything on stderr is a failure of the read. */
function failOnErrors(res: DebugfsResult, what: string): void {
  const lines = res.stderr.split('\n').filter((l) => l.trim() !== '');
  if (lines.length > 0) throw new Damage(`debugfs could not ${what}: ${firstError(lines)}`);
}

/**
 * With stderr merged, what debugfs printed before the first command ran is
 * about opening the filesystem ("Checksum errors in superblock!  Retrying...",
 * a group descriptor it had to fall back from): the image is damaged even
 * when every command then succeeds.
 */
function failOnPreamble(res: DebugfsResult): void {
  const first = res.stdout.startsWith('debugfs: ') ? 0 : res.stdout.indexOf('\ndebugfs: ');
  const preamble = first < 0 ? res.stdout : res.stdout.slice(0, first);
  const lines = preamble.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  if (lines.length > 0) throw new Damage(`debugfs, opening it: ${firstError(lines)}`);
}

// ---------------------------------------------------------------------------
// xattr values stat does not print (40 bytes and more)

async function fillLongXattrs(image: string, stats: Map<number, InodeStat>): Promise<void> {
  const wanted: { st: InodeStat; name: string; cmd: string }[] = [];
  for (const st of stats.values()) {
    for (const [name, value] of st.xattrs) {
      if (value !== null || name === 'system.data') continue;
      wanted.push({ st, name, cmd: `ea_get -r -x <${st.inode}> ${quoteDebugfsArg(name)}` });
    }
  }
  for (const part of chunks(wanted, BATCH)) {
    const cmds = part.map((w) => w.cmd);
    const res = await runDebugfs(image, cmds);
    failOnErrors(res, 'read extended attributes');
    const sections = splitDebugfsOutput(res.raw, cmds);
    part.forEach((w, i) => {
      const got = parseEaGetHex(sections[i].output);
      const length = w.st.xattrLengths.get(w.name);
      if (!got || got.value.length !== length) {
        throw new Damage(`cannot read xattr ${w.name} of inode ${w.st.inode}: ${sections[i].output.trim() || 'debugfs printed nothing for it'}`);
      }
      w.st.xattrs.set(w.name, got.value);
    });
  }
}

function manifestXattrs(st: InodeStat, path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of st.xattrs) {
    if (name === 'system.data') continue; // the inline-data area, not a user-visible xattr
    if (value === null) throw new Error(`xattr ${name} of ${path} was not read`);
    out[name] = (isAclXattr(name) ? aclDiskToXattr(value) : value).toString('hex');
  }
  return out;
}

// ---------------------------------------------------------------------------
// Contents: from the image file through the extent maps; `dump` for the rest

function hasBlockMap(st: InodeStat): boolean {
  return st.extents !== undefined && (st.flags & EXT4_INLINE_DATA_FL) === 0 && (st.flags & EXT4_ENCRYPT_FL) === 0;
}

async function readContents(
  reader: BlockReader,
  inodes: InodeStat[],
  hash: boolean,
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
    } else if (st.type === 'regular' && hash) {
      if (st.size === 0) content.set(st.inode, { sha256: EMPTY_SHA256 });
      else if (!hasBlockMap(st)) fallback.push(st);
      else {
        const h = createHash('sha256');
        await reader.readFile(st, (b) => h.update(b));
        content.set(st.inode, { sha256: h.digest('hex') });
      }
    }
  }
}

const EMPTY_SHA256 = createHash('sha256').digest('hex');
const ZEROS = Buffer.alloc(READ_CHUNK);

/** Bytes fed to a sink between two yields to the event loop (signals, timers, debugfs pipes). */
const YIELD_BYTES = 64 * 1024 * 1024;

class BlockReader {
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

  /** Feeds `size` bytes of inode `st`'s file through its block map to `sink` (chunks are reused: copy to keep). */
  async readFile(st: InodeStat, sink: (chunk: Buffer) => void): Promise<void> {
    const bs = this.bs;
    const size = st.size;
    const sorted = [...st.extents!].sort((a, b) => a.logical - b.logical);
    let pos = 0;
    for (const x of sorted) {
      const start = x.logical * bs;
      if (start >= size) break;
      if (start < pos) throw new Damage(`inode ${st.inode}: overlapping extents at logical block ${x.logical}`);
      if (!x.uninit && BigInt(x.physical) + BigInt(x.length) > this.blockCount) {
        throw new Damage(`inode ${st.inode}: an extent (blocks ${x.physical}-${x.physical + x.length - 1}) lies outside the filesystem's ${this.blockCount} blocks`);
      }
      await this.zeros(start - pos, sink);
      const len = Math.min(x.length * bs, size - start);
      if (x.uninit) await this.zeros(len, sink);
      else await this.copy(st, x.physical * bs, len, sink);
      pos = start + len;
    }
    await this.zeros(size - pos, sink);
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

/** Contents without a block map (inline data): `dump <N> FILE` in batches, then hash the files. */
async function dumpContents(image: string, inodes: InodeStat[], content: Map<number, Content>): Promise<void> {
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
