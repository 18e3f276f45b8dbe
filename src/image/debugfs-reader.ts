// Reads an ext2/3/4 image into the manifest model without mounting it and
// without privilege, through a few debugfs processes kept open for the whole
// read and fed batches of commands (image/debugfs-walk.ts DebugfsPool: as
// many as PART_IMAGE_JOBS, else the cores).
//
// The tree is walked level by level, in batches:
//   - `ls -p <INODE>` for every directory of a depth (inode file specs: no
//     quoting, no path lookups), one depth after another;
//   - `stat <INODE>` for every inode a depth's listings found (mode, owner,
//     size, links, mtime, xattrs, device numbers, fast symlink targets, extent
//     maps), started as soon as that listing is in, and run beside the
//     listings of the next depths: only the listings wait for each other.
//     (Waiting for a level's stats before its children were listed held the
//     Debian root's readback at 0.82-0.86 s; without, 0.68-0.70.)
// The contents of the files whose stat just arrived are hashed in a worker
// thread (image/hash-worker.ts), straight from the image file through their
// extent maps: holes and unwritten extents read as zeros, the last block is
// cut at the file size; meanwhile the main thread runs and parses the next
// levels. Long symlink targets (60 bytes and more) are read the same way, on
// the main thread.
//
// Only when needed, at the end: `ea_get -r -x` for the xattr values of 40
// bytes and more (stat prints only their length), and `dump <INODE> FILE` for
// contents without a block map (inline data).
//
// The debugfs batches, and their errors read as damage, are in
// debugfs-walk.ts; the contents in debugfs-content.ts.
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
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Manifest, ManifestEntry } from '../types.js';
import { log } from '../log.js';
import { collectGarbage } from '../memory.js';
import { InputError, ToolError, UnreadableImageError } from '../errors.js';
import { readExt4Superblock, superblockProblems, type Ext4Superblock } from './superblock.js';
import { childPath, formatMode, linkGroup, makeManifest, typeFromMode } from '../manifest/entry.js';
import type { InodeStat } from '../tools/debugfs-stat.js';
import { Damage, DebugfsPool, fillLongXattrs, hasLongXattrs, listLevel, manifestXattrs, statLevel, type Node } from './debugfs-walk.js';
import { settleAll } from '../cleanup.js';
import { BlockReader, dumpContents, readContents, type Content } from './debugfs-content.js';
import { HashWorker } from './hash-worker.js';
import { InodeTable } from './inode-table.js';

export interface ImageReadOptions {
  /** Hash regular file contents (default true). Symlink targets are read either way. */
  hash?: boolean;
  /** The name to give the image in messages (the user's file when `image` is a raw copy of a qcow2/vmdk). */
  name?: string;
}

const ROOT_INO = 2;
/** Inodes from which a level, and the manifest built at the end, are worth a full collection. */
const COLLECT_FROM = 8000;
/**
 * Images with fewer inodes in use than this take no full collection: what
 * the read keeps is small beside the rest of the process. The two a Debian
 * root's 10,000 inodes took cost its readback 60-110 ms of main thread.
 */
const COLLECT_ABOVE = 20000;

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

/**
 * An inode's manifest fields, what the reader keeps of it once its contents
 * are read: an entry whose path is still to come (its first key, so that the
 * entry keeps the manifest's key order when the path is filled in).
 */
type InodeFields = ManifestEntry;

async function readManifest(image: string, hash: boolean): Promise<Manifest> {
  const img = resolve(image);
  const st = await stat(img).catch(() => {
    throw new InputError(`image not found: ${image}`);
  });
  if (!st.isFile() && !st.isBlockDevice()) throw new InputError(`not an image file: ${image}`);
  const { blockSize, blockCount, inodeCount, freeInodeCount } = await checkedSuperblock(img);
  const collects = inodeCount - freeInodeCount >= COLLECT_ABOVE;

  // Every path the listings found, and its inode (two arrays: 500,000 small objects took 20 MB).
  const nodePaths: string[] = ['/'];
  const nodeInos: number[] = [ROOT_INO];
  // Each inode's fields as soon as its level is read (a stat with its maps
  // and extents is ten times as big); the stats of the few inodes that need
  // more reading at the end (long xattr values, inline data) are kept whole.
  const fields = new InodeTable<InodeFields>(inodeCount);
  const later = new Map<number, InodeStat>();
  const laterContent = new Map<number, Content>();
  const fallback: InodeStat[] = [];
  const seenDirs = new Set<number>([ROOT_INO]);
  // The first path of every inode found so far; an inode is stat'ed once, when it first turns up.
  const pathOf = new InodeTable<string>(inodeCount);
  pathOf.set(ROOT_INO, '/');
  const reader = new BlockReader(img, blockSize, blockCount);
  // Each file's hash goes into its fields as the worker answers it, or
  // waits in `early` for them (an answer can come in while its batch is
  // still being taken in, or before a `later` inode's fields are made); the
  // first damage the worker met is thrown once all are in.
  const early = new Map<number, string>();
  let hashDamage: string | undefined;
  const hasher = hash
    ? new HashWorker(img, (a) => {
      if ('damage' in a) hashDamage ??= a.damage;
      else {
        const f = fields.get(a.inode);
        if (f) f.sha256 = a.sha256;
        else early.set(a.inode, a.sha256);
      }
    })
    : undefined;
  const keep = (ino: number, f: InodeFields) => {
    const sha = early.get(ino);
    if (sha !== undefined) {
      f.sha256 = sha;
      early.delete(ino);
    }
    fields.set(ino, f);
  };
  // Inodes taken in since the last full collection.
  let sinceCollect = 0;
  // What a batch of stats brings: fields kept, contents queued for hashing.
  const onStats = async (inodes: InodeStat[]): Promise<void> => {
    log.progress(`${fields.size + later.size + inodes.length} inodes read${hash ? ', hashing' : ''}`);
    const content = new Map<number, Content>();
    const noMap: InodeStat[] = [];
    await readContents(reader, inodes, hasher, content, noMap);
    for (const s of noMap) {
      fallback.push(s);
      later.set(s.inode, s);
    }
    for (const s of inodes) {
      if (hasLongXattrs(s)) later.set(s.inode, s);
      if (later.has(s.inode)) {
        s.extents = undefined;
        const c = content.get(s.inode);
        if (c) laterContent.set(s.inode, c);
      } else keep(s.inode, inodeFields(s, content.get(s.inode), hash, pathOf.get(s.inode)!));
    }
    // The stats die here: collected at once when many were taken in since
    // the last collection, against what is kept (so that the collections,
    // each as long as what is live, add up to about five times the last).
    sinceCollect += inodes.length;
    if (collects && sinceCollect >= COLLECT_FROM && sinceCollect * 4 >= fields.size) {
      sinceCollect = 0;
      collectGarbage();
    }
  };
  // The listings go from level to level; each level's stats run beside the
  // next levels' listings, and are taken in as they arrive.
  const stats: Promise<void>[] = [];
  let failure = false;
  const pool = new DebugfsPool(img);
  const statThen = (inos: number[]) => {
    const job = statLevel(pool, inos, pathOf, onStats);
    job.catch(() => {
      failure = true;
    });
    stats.push(job);
  };
  try {
    statThen([ROOT_INO]);
    let dirs: Node[] = [{ path: '/', ino: ROOT_INO }];
    while (dirs.length > 0 && !failure) {
      const listings = await listLevel(pool, dirs);
      // Children of this level: the next level's directories and inodes.
      const nextDirs: Node[] = [];
      const newInodes: number[] = [];
      for (const dir of dirs) {
        const section = listings.get(dir.ino)!;
        for (const e of section.entries) {
          const path = childPath(dir.path, e.name);
          if (e.inode < 1 || e.inode > inodeCount) throw new Damage(`${path} names inode ${e.inode}, outside the filesystem's 1-${inodeCount}`);
          nodePaths.push(path);
          nodeInos.push(e.inode);
          if (!pathOf.has(e.inode)) {
            pathOf.set(e.inode, path);
            newInodes.push(e.inode);
          }
          if ((e.mode & 0o170000) === 0o040000) {
            if (seenDirs.has(e.inode)) throw new Damage(`directory inode ${e.inode} is linked twice (again at ${path})`);
            seenDirs.add(e.inode);
            nextDirs.push({ path, ino: e.inode });
          }
        }
      }
      listings.clear();
      if (newInodes.length > 0) statThen(newInodes);
      dirs = nextDirs;
    }
    await settleAll(stats);
    await hasher?.done();
    if (hashDamage) throw new Damage(hashDamage);
  } finally {
    // A failure must not leave stat batches, or debugfs processes, behind.
    await Promise.allSettled(stats);
    await pool.close();
    reader.close();
    await hasher?.close();
  }
  if (later.size > 0) {
    await fillLongXattrs(img, later);
    if (fallback.length > 0) await dumpContents(img, fallback, laterContent);
    for (const s of later.values()) keep(s.inode, inodeFields(s, laterContent.get(s.inode), hash, pathOf.get(s.inode)!));
    later.clear();
  }

  pathOf.clear();
  seenDirs.clear();
  if (collects && nodePaths.length >= COLLECT_FROM) collectGarbage();
  // How many paths each inode has (2 means two or more): only those of a
  // file with two are grouped as hard links.
  const paths = new InodeTable<number>(inodeCount);
  for (const ino of nodeInos) paths.set(ino, Math.min(2, (paths.get(ino) ?? 0) + 1));
  const entries: ManifestEntry[] = [];
  const groups = new Map<number, ManifestEntry[]>();
  for (let i = 0; i < nodePaths.length; i++) {
    const ino = nodeInos[i];
    const f = fields.get(ino);
    if (!f) throw new Error(`inode ${ino} of ${nodePaths[i]} was not read`);
    // The inode's fields become its first path's entry; further paths of a hard-linked inode get a copy.
    let entry = f;
    if (f.path === '') f.path = nodePaths[i];
    else entry = { ...f, path: nodePaths[i] };
    entries.push(entry);
    if (entry.type === 'file' && paths.get(ino) === 2) {
      const g = groups.get(ino);
      if (g) g.push(entry);
      else groups.set(ino, [entry]);
    }
  }
  nodePaths.length = 0;
  nodeInos.length = 0;
  fields.clear();
  paths.clear();
  for (const g of groups.values()) linkGroup(g);
  return makeManifest(entries);
}

/** The manifest fields of an inode, in the manifest's key order. */
function inodeFields(s: InodeStat, c: Content | undefined, hash: boolean, path: string): InodeFields {
  const type = typeFromMode(s.mode);
  const f: InodeFields = { path: '', type, mode: formatMode(s.mode), uid: s.uid, gid: s.gid };
  if (type === 'file') {
    f.size = s.size;
    if (hash) f.sha256 = c?.sha256;
  } else if (type === 'symlink') {
    f.size = s.size;
    f.target = c?.target;
  } else if ((type === 'char' || type === 'block') && s.rdev) {
    f.rdev = `${s.rdev.major},${s.rdev.minor}`;
  }
  if (s.xattrs.size > 0) {
    const xattrs = manifestXattrs(s, path);
    if (Object.keys(xattrs).length > 0) f.xattrs = xattrs;
  }
  if (s.mtime !== undefined) f.mtime = s.mtime;
  return f;
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
