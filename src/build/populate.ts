// Fills an empty ext4 image with a tree, rootless, through one debugfs script,
// fed to debugfs as it is made.
//
// Why not `mke2fs -d DIR`: e2fsprogs 1.47.0 (Debian 12) needs a directory
// there, and a directory cannot carry uid 0, device nodes or
// security.capability without root; and mke2fs -d creates inodes in readdir
// order, which differs between staging filesystems and breaks reproducible
// images. The script below creates every entry in manifest (byte) order and
// sets every field from the manifest itself, so the image is the same
// whoever builds it and wherever the input was staged.
//
// Every command after the one that creates an entry names it by its inode,
// `<N>`, computed ahead (build/inodes.ts); so does every `cd`. A name would
// make debugfs scan the folder for it, once per command. debugfs reports the inodes it
// allocates for files and devices, and populate() checks them against the
// computed ones.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatCommand } from '../exec.js';
import { log } from '../log.js';
import type { ContentMap, Manifest, ManifestEntry } from '../types.js';
import { typeBits, parentPath } from '../manifest/entry.js';
import { InputError } from '../errors.js';
import { isAclXattr } from '../manifest/acl.js';
import { DEBUGFS_MAX_LINE, DebugfsFeed, quoteDebugfsArg, runDebugfsFeed } from '../tools/debugfs.js';
import { readExt4Superblock } from '../image/superblock.js';
import { InodeAllocator, type InodeGeometry } from './inodes.js';
import { syncFile } from '../tools/sync.js';

const ROOT_INO = 2;

/** The mode debugfs's mkdir and symlink give a new inode (ext2fs_mkdir: 0777 less libext2fs's umask 022; ext2fs_symlink: 0777). */
const CREATED_MODE: Partial<Record<ManifestEntry['type'], number>> = { dir: 0o40755, symlink: 0o120777 };

export interface PopulateScript {
  /** The inode of each `write` and `mknod`, in order: what debugfs must report allocating ("Allocated inode: N"). */
  reported: number[];
}

export interface PopulateOptions {
  /** Time stamped on every inode for atime/ctime/crtime and the superblock. */
  now: number;
  /** Clamp mtimes to this (SOURCE_DATE_EPOCH), for reproducible images. */
  clampMtime?: number;
  /** Where xattr values are written for `ea_set -f`. */
  workDir: string;
}

function stamp(epoch: number): string {
  const d = new Date(epoch * 1000);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getUTCFullYear(), 4)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}`;
}

const LOST_FOUND = '/lost+found';

function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/*
 * How each debugfs 1.47.0 command used here takes a name (read in its source;
 * test/populate.test.ts builds every odd name and reads it back):
 * - mkdir, write, symlink split their path at the last "/" and resolve the
 *   folder part; mknod does not split at all, so "/dev/-x" would become an
 *   entry named "/dev/-x" in the current folder. None of the four runs getopt
 *   or reads "<N>" as an inode on the new name, so each is given the bare
 *   name, in its own folder (cd).
 * - ln, sif, ea_set and cd look their argument up with string_to_inode(): a
 *   whole argument "<N>" is inode N, and ea_set's getopt takes any argument
 *   starting with "-" for an option. The script gives them "<N>" (an inode
 *   it computed), or "./NAME" where it has no number yet, which is neither
 *   an option nor an inode, whatever NAME is.
 * - rmdir looks its argument up by name only.
 */

/** The mtime commands: debugfs refuses "@-1" (its parse error value), so -1 goes in as its low 32 bits with epoch 0. */
function mtimeCommands(self: string, mtime: number): string[] {
  const q = quoteDebugfsArg;
  if (mtime !== -1) return [`sif ${q(self)} mtime @${mtime}`];
  return [`sif ${q(self)} mtime @${2 ** 32 - 1}`, `sif ${q(self)} mtime_extra 0`];
}

/**
 * The debugfs commands that recreate `manifest` in an empty filesystem, given
 * to `emit` one at a time (an entry's once they are all checked). Pure but
 * for xattr value files.
 */
export async function buildPopulateScript(
  manifest: Manifest, content: ContentMap, o: PopulateOptions, geometry: InodeGeometry & { blockSize: number }, emit: (command: string) => void,
  /** Between entries: a promise to wait for before going on (the consumer has enough queued). */
  room: () => Promise<void> | undefined = () => undefined,
): Promise<PopulateScript> {
  const q = quoteDebugfsArg;
  // The current entry's commands; emitted at the start of the next.
  const cmds: string[] = [`set_current_time ${stamp(o.now)}`];
  const flush = () => {
    for (const c of cmds) emit(c);
    cmds.length = 0;
  };
  const reported: number[] = [];
  const valueFiles = new Map<string, string>();
  const inodes = new InodeAllocator(geometry);
  // Folders by path (children are created in them), and the first path of
  // each hardlink group (later paths link to its inode).
  const inoOf = new Map<string, number>([['/', ROOT_INO]]);
  const linked = new Set<string>();
  for (const e of manifest.entries) if (e.hardlink) linked.add(e.hardlink);
  // debugfs's ln, unlike write, mkdir, symlink and mknod, does not add a
  // block to a full folder: it fails with "No free space in the directory".
  // So a folder gets an empty block (expand_dir) before a hard link could
  // find no room: before its first one, and again whenever the names made in
  // it since the last block could have filled that block. Bytes of
  // entries made since the folder's last expand_dir, by folder inode:
  const sinceExpand = new Map<number, number>();
  // A block's room for entries: the metadata_csum tail takes 12 bytes.
  const blockRoom = geometry.blockSize - 12;
  let cwd = ROOT_INO;
  const cd = (ino: number) => {
    if (ino !== cwd) {
      cmds.push(`cd <${ino}>`);
      cwd = ino;
    }
  };

  for (const e of manifest.entries) {
    flush();
    const wait = room();
    if (wait) await wait;
    if (/[\n\r\0]/.test(e.path) || /[\n\r\0]/.test(e.target ?? '')) {
      throw new InputError(
        `${JSON.stringify(e.path)}: part-image cannot write a name or symlink target containing a newline, carriage return or NUL (debugfs scripts cannot carry it)`,
        'Rename the entry (or fix the symlink) in the input tree.',
      );
    }
    let ino: number;
    if (e.path === LOST_FOUND && e.type === 'dir') {
      // mke2fs made it already (with its preallocated blocks): keep it, set its fields.
      ino = geometry.firstIno;
    } else if (e.path !== '/') {
      const parent = inoOf.get(parentPath(e.path));
      if (parent === undefined) throw new Error(`no folder ${parentPath(e.path)} before ${e.path}: a bug in the manifest order`);
      cd(parent);
      if (e.path === LOST_FOUND) {
        cmds.push(`rmdir ${LOST_FOUND}`);
        inodes.free(geometry.firstIno);
      }
      const name = baseName(e.path);
      let used = (sinceExpand.get(parent) ?? Infinity) + direntBytes(name);
      if (e.hardlink && used > blockRoom) {
        cmds.push(`expand_dir <${parent}>`);
        used = direntBytes(name);
      }
      sinceExpand.set(parent, used);
      if (!createEntry(e, name, content, cmds, inoOf)) continue;
      if (e.hardlink) {
        checkLines(e, cmds);
        continue; // shares the inode of its group's first path
      }
      const got = inodes.alloc(parent);
      if (got === undefined) throw new ImageFullError(`no free inode for ${e.path}`);
      ino = got;
      if (e.type !== 'dir' && e.type !== 'symlink') reported.push(ino);
    } else {
      ino = ROOT_INO;
    }
    if (e.type === 'dir' || linked.has(e.path)) inoOf.set(e.path, ino);
    const self = `<${ino}>`;
    const mode = typeBits(e.type) | parseInt(e.mode, 8);
    if (e.path === '/' || e.path === LOST_FOUND || mode !== CREATED_MODE[e.type]) cmds.push(`sif ${self} mode 0${mode.toString(8)}`);
    if (e.uid !== 0) cmds.push(`sif ${self} uid ${e.uid}`);
    if (e.gid !== 0) cmds.push(`sif ${self} gid ${e.gid}`);
    for (const [attr, hex] of Object.entries(e.xattrs ?? {})) {
      let file = valueFiles.get(hex);
      if (!file) {
        file = join(o.workDir, `xattr-${valueFiles.size}`);
        await writeFile(file, Buffer.from(hex, 'hex'));
        valueFiles.set(hex, file);
      }
      // -r: the value is stored as given. POSIX ACLs arrive in the Linux
      // xattr format and debugfs converts that format itself without -r.
      const raw = isAclXattr(attr) ? '' : '-r ';
      cmds.push(`ea_set ${raw}-f ${q(file)} ${self} ${q(attr)}`);
    }
    if (e.mtime !== undefined) {
      const mtime = o.clampMtime !== undefined ? Math.min(e.mtime, o.clampMtime) : e.mtime;
      if (mtime !== o.now) cmds.push(...mtimeCommands(self, mtime));
    }
    // debugfs's ln leaves link counts alone: the group's first path sets it.
    if (e.nlink && e.nlink > 1) cmds.push(`sif ${self} links_count ${e.nlink}`);
    checkLines(e, cmds);
  }
  cd(ROOT_INO);
  flush();
  return { reported };
}

/** A command longer than debugfs reads whole would run cut in two: refuse the entry instead. */
function checkLines(e: ManifestEntry, cmds: string[]): void {
  for (const c of cmds) {
    const len = Buffer.byteLength(c);
    if (len > DEBUGFS_MAX_LINE) {
      throw new InputError(
        `${JSON.stringify(e.path)}: its path or symlink target makes a debugfs command of ${len} bytes, and debugfs reads at most ${DEBUGFS_MAX_LINE} per line`,
        'Shorten the path (or the symlink target) in the input tree.',
      );
    }
  }
}

/** The bytes a directory entry of this name takes in a folder block: 8 of header and the name, to a multiple of 4. */
function direntBytes(name: string): number {
  return (8 + Buffer.byteLength(name) + 3) & ~3;
}

/** The kernel's new dev_t encoding in i_block[1] (what do_mknod_internal writes for numbers above 255). */
export function encodeRdev(major: number, minor: number): number {
  return ((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

function createEntry(e: ManifestEntry, name: string, content: ContentMap, cmds: string[], inoOf: ReadonlyMap<string, number>): boolean {
  const q = quoteDebugfsArg;
  switch (e.type) {
    case 'dir':
      cmds.push(`mkdir ${q(name)}`);
      return true;
    case 'file': {
      if (e.hardlink) {
        const target = inoOf.get(e.hardlink);
        if (target === undefined) throw new Error(`hard link ${e.path} to ${e.hardlink}, which is not before it: a bug in the manifest order`);
        cmds.push(`ln <${target}> ${q(name)}`);
        return true;
      }
      const src = content.get(e.path);
      if (!src) throw new Error(`no content for ${e.path}: a bug in the input reader`);
      if (/[\n\r\0]/.test(src)) {
        throw new InputError(`${JSON.stringify(e.path)}: its content is read from ${JSON.stringify(src)}, a host path with a newline or carriage return, which a debugfs script cannot carry`,
          'Move the input to a folder whose path has no newline.');
      }
      cmds.push(`write ${q(src)} ${q(name)}`);
      return true;
    }
    case 'symlink':
      cmds.push(`symlink ${q(name)} ${q(e.target ?? '')}`);
      return true;
    case 'char':
    case 'block': {
      const [major, minor] = (e.rdev ?? '0,0').split(',').map(Number);
      const kind = e.type === 'char' ? 'c' : 'b';
      if (major <= 65535 && minor <= 65535) {
        cmds.push(`mknod ${q(name)} ${kind} ${major} ${minor}`);
      } else {
        // debugfs's mknod takes numbers up to 65535 only: write the encoding itself.
        cmds.push(`mknod ${q(name)} ${kind} 0 0`, `sif ${q(`./${name}`)} block[1] ${encodeRdev(major, minor)}`);
      }
      return true;
    }
    case 'fifo':
      cmds.push(`mknod ${q(name)} p`);
      return true;
    case 'socket':
      // A socket is a rendezvous point of a running process; images never
      // carry one. The read stage's notes and the diff stage's details say so.
      return false;
  }
}

const NO_SPACE = /Could not allocate (block|inode)|No space left/;

/** Runs the script; debugfs reports errors only on stderr, and exits 0 regardless. */
export async function populate(image: string, manifest: Manifest, content: ContentMap, o: PopulateOptions): Promise<void> {
  const { superblock: sb } = await readExt4Superblock(image);
  if (!sb) throw new Error(`mke2fs left no ext4 superblock in ${image}`);
  // debugfs runs the script while it is made, and the image goes to disk while debugfs fills it.
  const feed = new DebugfsFeed();
  const running = runDebugfsFeed(image, feed, { write: true, allocatedOnly: true });
  running.catch(() => undefined);
  const flushing = flushWhile(image, running);
  let reported: number[];
  try {
    ({ reported } = await buildPopulateScript(manifest, content, o, sb, (c) => feed.add(c), () => feed.room()));
  } catch (err) {
    // The image is thrown away: debugfs ends with the commands it has.
    feed.end();
    await running.catch(() => undefined);
    await flushing;
    throw err;
  }
  feed.end();
  const { stderr, allocated } = await running.finally(() => flushing);
  const errors = stderr.split('\n').filter((l) => l.trim());
  if (errors.some((l) => NO_SPACE.test(l))) throw new ImageFullError(errors[0]);
  if (errors.length > 0) {
    throw new InputError(`debugfs could not write the tree into the image:\n  ${errors.slice(0, 10).join('\n  ')}`,
      'Check the entries named above; run with --verbose to see the debugfs command.');
  }
  checkAllocations(reported, allocated);
}

/** Pause between the end of one `sync IMAGE` and the next. */
const FLUSH_PAUSE_MS = 50;

/**
 * Flushes the image to disk while debugfs fills it: `sync IMAGE` again
 * FLUSH_PAUSE_MS after each one ends, until debugfs has exited. debugfs's
 * own fsync as it closes the image then finds little left to write: on a
 * disk filesystem it took half of the build (0.50 of 0.93 s on the Debian
 * root), and with the flushes alongside, the same debugfs script ran in
 * 0.70-0.76 s instead of 0.96-0.99. A sync that fails ends the flushing;
 * debugfs reports what is wrong with the image file itself.
 */
async function flushWhile(image: string, debugfs: Promise<unknown>): Promise<void> {
  let over = false;
  const ended = debugfs.then(() => undefined, () => undefined).finally(() => {
    over = true;
  });
  // Under --verbose the first sync is printed, with what follows it.
  log.command(`${formatCommand('sync', ['--', image])}  # again ${FLUSH_PAUSE_MS} ms after each one ends, until debugfs exits`);
  while (!over) {
    try {
      await syncFile(image, false);
    } catch {
      return;
    }
    if (over) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([ended, new Promise((r) => { timer = setTimeout(r, FLUSH_PAUSE_MS); })]);
    clearTimeout(timer);
  }
}

/**
 * The script set the fields of `<N>` inodes it computed (build/inodes.ts);
 * a libext2fs that allocates otherwise would have set them on the wrong
 * inodes. The inodes debugfs reports for files and device nodes must be the
 * computed ones.
 */
export function checkAllocations(computed: readonly number[], allocated: readonly number[]): void {
  const n = Math.max(computed.length, allocated.length);
  for (let i = 0; i < n; i++) {
    if (computed[i] !== allocated[i]) {
      throw new Error(`debugfs allocated inode ${allocated[i] ?? 'none'} for write or mknod number ${i + 1}, where part-image computed ${computed[i] ?? 'none'} `
        + `(${allocated.length} allocated, ${computed.length} computed): this libext2fs allocates inodes another way than build/inodes.ts knows; the image is not used`);
    }
  }
}

export class ImageFullError extends Error {}
