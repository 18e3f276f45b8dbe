// Reads a directory into the manifest model: an lstat walk that never follows
// symlinks, every xattr (ACLs included) read in one getfattr process running
// beside the walk, and file contents hashed as streams, 8 files at a time
// (walk/hash.ts).
//
// scanDir() is the walk itself, without hashing or hardlink groups; the layer
// reader (input/layers.ts) merges several scans before it hashes the winners.
//
// It sits below input/ and image/ because both read directories: input/ a
// tree given as a folder, image/mount-reader.ts a loop-mounted image.
import { lstatSync, readdirSync, readlinkSync, type BigIntStats } from 'node:fs';
import { lstat, realpath } from 'node:fs/promises';
import { join, normalize } from 'node:path';
import type { ContentMap, InputTree, ManifestEntry } from '../types.js';
import { InputError, InterruptedError } from '../errors.js';
import { assignHardlinks, childPath, formatMode, makeManifest, typeFromMode } from '../manifest/entry.js';
import { readXattrTree } from '../tools/getfattr.js';
import { checkApparentSize } from '../manifest/apparent-size.js';
import { isShuttingDown } from '../cleanup.js';
import { log } from '../log.js';
import { hashFiles, inputIoError } from './hash.js';

export interface ReadDirOptions {
  /** Hash file contents (default true). */
  hash?: boolean;
  /** SIZE_MB in bytes: refuse a tree whose apparent size exceeds it, before hashing. */
  maxBytes?: number;
}

/** One path of a scanned directory, with what the manifest does not keep. */
export interface ScannedEntry {
  /** No sha256, nlink or hardlink yet. */
  entry: ManifestEntry;
  /** Where the path lives on the host. */
  host: string;
  /** "dev:ino": identifies hardlinks and counts each inode once for the size. */
  inode: string;
  /** st_blocks (512-byte units). */
  blocks: number;
}

export interface ScannedDir {
  /** The real path of the directory that was read. */
  root: string;
  /** In no particular order. */
  entries: ScannedEntry[];
}

/**
 * "major,minor" of a dev_t in glibc's encoding (gnu_dev_major/minor). 64-bit
 * values, so BigInt: 32-bit JS bitwise operators would truncate them. The
 * minor mask matters: bits 44+ belong to the major.
 */
export function formatRdev(rdev: number | bigint): string {
  const r = BigInt(rdev);
  const major = ((r >> 8n) & 0xfffn) | ((r >> 32n) & 0xfffff000n);
  const minor = (r & 0xffn) | ((r >> 12n) & 0xffffff00n);
  return `${major},${minor}`;
}

/** A name read as bytes, refused when it is not UTF-8 (manifest paths are text). */
function decodeName(raw: Buffer, parent: string): string {
  const name = raw.toString('utf8');
  if (!Buffer.from(name, 'utf8').equals(raw)) {
    throw new InputError(
      `file name is not valid UTF-8: ${childPath(parent, name)} (bytes: ${raw.toString('hex')})`,
      'Rename it to UTF-8; part-image records paths as UTF-8 text.',
    );
  }
  return name;
}

/** Whole seconds of a nanosecond timestamp, rounded down (also before 1970). */
function floorSeconds(ns: bigint): number {
  let s = ns / 1_000_000_000n;
  if (ns < 0n && s * 1_000_000_000n !== ns) s -= 1n;
  return Number(s);
}

// BigInt stats: exact inode numbers (64-bit) and exact mtimes (mtimeMs as a
// double rounds 999999999 ns up to the next second).
function entryFromStat(path: string, st: BigIntStats): ManifestEntry {
  const mode = Number(st.mode);
  const type = typeFromMode(mode);
  const e: ManifestEntry = { path, type, mode: formatMode(mode), uid: Number(st.uid), gid: Number(st.gid) };
  if (type === 'file' || type === 'symlink') e.size = Number(st.size);
  if (type === 'char' || type === 'block') e.rdev = formatRdev(st.rdev);
  e.mtime = floorSeconds(st.mtimeNs);
  return e;
}

/** One turn of the event loop (signals, progress); stops the walk once an interrupt began. */
async function turn(scanned: number): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
  if (isShuttingDown()) throw new InterruptedError('signal');
  log.progress(`${scanned} entries scanned`);
}

/** Walk `path` with lstat (symlinks are never followed) and read its xattrs. No hashing. */
export async function scanDir(path: string): Promise<ScannedDir> {
  let root: string;
  try {
    root = await realpath(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new InputError(`input not found: ${path}`, undefined, err);
    throw inputIoError(err, path, path, 'read');
  }
  const rootStat = await lstat(root, { bigint: true }).catch((err) => {
    throw inputIoError(err, '/', root, 'read');
  });
  if (!rootStat.isDirectory()) throw new InputError(`not a directory: ${path}`);

  // getfattr runs while we walk; its errors are reported after the walk's,
  // which name the path more precisely.
  const xattrsPromise = readXattrTree(root);
  xattrsPromise.catch(() => undefined);

  const entries: ScannedEntry[] = [];
  const add = (path: string, host: string, st: BigIntStats): ScannedEntry => {
    const se: ScannedEntry = { entry: entryFromStat(path, st), host, inode: `${st.dev}:${st.ino}`, blocks: Number(st.blocks) };
    entries.push(se);
    return se;
  };
  add('/', root, rootStat);

  // One directory at a time with synchronous calls, yielding to the event
  // loop between directories (signals, progress): on a 2-core CI host this is
  // 2-3 times faster than thousands of queued async lstat calls, and the
  // getfattr process runs beside it on the other core.
  const pending: [string, string][] = [[root, '/']];
  while (pending.length > 0) {
    const [hostDir, dirPath] = pending.pop()!;
    let names: Buffer[];
    try {
      names = readdirSync(hostDir, { encoding: 'buffer' });
    } catch (err) {
      throw inputIoError(err, dirPath, hostDir, 'list the directory');
    }
    for (const [i, raw] of names.entries()) {
      // A folder of a million entries must not hold off signals for seconds.
      if (i > 0 && i % 4096 === 0) await turn(entries.length);
      const name = decodeName(raw, dirPath);
      const host = join(hostDir, name);
      const path = childPath(dirPath, name);
      let st: BigIntStats;
      try {
        st = lstatSync(host, { bigint: true });
      } catch (err) {
        throw inputIoError(err, path, host, 'read');
      }
      const se = add(path, host, st);
      if (se.entry.type === 'symlink') {
        let target: Buffer;
        try {
          target = readlinkSync(host, { encoding: 'buffer' });
        } catch (err) {
          throw inputIoError(err, path, host, 'read the symlink');
        }
        se.entry.target = target.toString('utf8');
        if (!Buffer.from(se.entry.target, 'utf8').equals(target)) {
          throw new InputError(
            `symlink target of ${path} is not valid UTF-8 (bytes: ${target.toString('hex')})`,
            'Change the target to UTF-8; part-image records targets as UTF-8 text.',
          );
        }
      } else if (se.entry.type === 'dir') {
        pending.push([host, path]);
      }
    }
    await turn(entries.length);
  }

  const dump = await xattrsPromise;
  const byHost = new Map(entries.map((se) => [se.host, se]));
  for (const [host, xattrs] of dump) {
    const se = byHost.get(host) ?? byHost.get(normalize(host));
    if (!se) {
      throw new InputError(
        `getfattr reported ${host}, which the walk did not see`,
        'Do not change the input while part-image reads it.',
      );
    }
    if (Object.keys(xattrs).length > 0) se.entry.xattrs = xattrs;
  }
  return { root, entries };
}

/** MiB as `du -sm` counts them: allocated blocks of each inode once, rounded up. */
export function duMegabytes(items: Iterable<{ inode: string; blocks: number }>): number {
  const seen = new Set<string>();
  let bytes = 0;
  for (const { inode, blocks } of items) {
    if (seen.has(inode)) continue;
    seen.add(inode);
    bytes += blocks * 512;
  }
  return Math.ceil(bytes / (1024 * 1024));
}

export async function readDirTree(path: string, opts: ReadDirOptions = {}): Promise<InputTree> {
  const scan = await scanDir(path);
  const entries = scan.entries.map((se) => se.entry);
  const content: ContentMap = new Map();
  const inodeOf = new Map<string, string>();
  for (const se of scan.entries) {
    if (se.entry.type !== 'file') continue;
    content.set(se.entry.path, se.host);
    inodeOf.set(se.entry.path, se.inode);
  }
  assignHardlinks(entries, (e) => inodeOf.get(e.path));
  checkApparentSize(entries, opts.maxBytes, path);
  if (opts.hash ?? true) await hashFiles(entries, content);
  return {
    kind: 'dir',
    source: path,
    manifest: makeManifest(entries),
    content,
    usedMb: duMegabytes(scan.entries),
  };
}
