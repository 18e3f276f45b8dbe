// What an ext4 image made by part-image can hold, checked on every input tree
// (directory, tar, layer stack) before anything is built. A value outside
// these limits is refused by name (InputError, exit 2), never changed: debugfs
// would otherwise store 2^40 as mtime 0, cut a uid to 32 bits, or drop an
// xattr that does not fit.
//
// The limits are those of the filesystems part-image makes (tools/mke2fs.ts:
// 4096-byte blocks, 256-byte inodes, no ea_inode) as the Linux kernel and
// e2fsprogs 1.47.0 read and write them:
// - names: 255 bytes per component (EXT4_NAME_LEN); no newline or CR, which a
//   debugfs script line cannot carry (the builder's limit, not ext4's);
// - symlink targets: 1 to 4095 bytes (one block with its NUL; ext2fs_symlink
//   and the kernel refuse longer ones);
// - mtime: ext4 keeps 32 signed bits plus 2 epoch bits in i_mtime_extra, so
//   -2^31 .. 2^34 - 2^31 - 1 seconds: 1901-12-13T20:45:52Z .. 2446-05-10T22:38:55Z;
// - uid/gid: 0 .. 2^32 - 2 (2^32 - 1 is (uid_t)-1, "no owner", which chown(2)
//   takes as "leave unchanged");
// - device numbers: major 0..4095, minor 0..1048575 (the kernel's 12/20-bit dev_t);
// - hard links: at most 65000 names per file (EXT4_LINK_MAX);
// - files: at most 16 TiB - 4 KiB (2^32 - 1 blocks of 4 KiB, ext4 with extents);
// - xattrs: names in a namespace ext4 stores (user., trusted., security.,
//   system.posix_acl_access/default), at most 255 bytes, and all of an
//   inode's xattrs must fit in the room libext2fs gives them: see xattrRoom().
import type { Manifest, ManifestEntry } from '../types.js';
import { InputError } from '../errors.js';
import { BLOCK_SIZE } from '../tools/mke2fs.js';
import { ACL_XATTR_NAMES, aclFromXattr, ext4AclBytes, isAclXattr } from '../manifest/acl.js';

export const NAME_MAX = 255;
export const SYMLINK_MAX = BLOCK_SIZE - 1;
export const MTIME_MIN = -(2 ** 31);
export const MTIME_MAX = 2 ** 34 - 2 ** 31 - 1;
/** (uid_t)-1 and above are refused. */
export const ID_MAX = 2 ** 32 - 2;
export const MAJOR_MAX = 4095;
export const MINOR_MAX = 0xfffff;
export const LINK_MAX = 65000;
export const FILE_SIZE_MAX = (2 ** 32 - 1) * BLOCK_SIZE;
export const XATTR_NAME_MAX = 255;
const INODE_SIZE = 256;

/** "1901-12-13T20:45:52Z" for a time in seconds, or the number when Date cannot show it. */
export function isoTime(seconds: number): string {
  const d = new Date(seconds * 1000);
  return Number.isNaN(d.getTime()) ? `${seconds} s` : d.toISOString().replace('.000Z', 'Z');
}

const MTIME_RANGE = `${isoTime(MTIME_MIN)} .. ${isoTime(MTIME_MAX)} (${MTIME_MIN} .. ${MTIME_MAX} s)`;

// ---------------------------------------------------------------------------
// xattr room

/**
 * The namespaces ext4 stores, with libext2fs's index: the prefix is kept as
 * a number and only the rest of the name takes room (find_ea_index()).
 */
const XATTR_PREFIXES: [prefix: string, exact: boolean][] = [
  ['user.', false],
  ...ACL_XATTR_NAMES.map((name): [string, boolean] => [name, true]),
  ['trusted.', false],
  ['security.', false],
];

function shortNameLength(name: string): number | undefined {
  for (const [prefix, exact] of XATTR_PREFIXES) {
    if (exact ? name === prefix : name.startsWith(prefix) && name.length > prefix.length) {
      return Buffer.byteLength(name) - Buffer.byteLength(prefix);
    }
  }
  return undefined;
}

/** EXT2_EXT_ATTR_LEN: a 16-byte entry header plus the name, rounded to 4. */
const entryLength = (nameLen: number) => (nameLen + 16 + 3) & ~3;
/** EXT2_EXT_ATTR_SIZE: the value, rounded to 4. */
const valueLength = (len: number) => (len + 3) & ~3;

/**
 * The room libext2fs 1.47.0 (ext2fs_xattr_set) gives an inode's xattrs in
 * the images part-image makes: in the inode, 256 - 128 (base inode) - 32
 * (i_extra_isize) - 8 (magic and end marker) = 88 bytes; in its one xattr
 * block, 4096 - 32 (header) - 4 (end marker) = 4060 bytes. Each xattr takes
 * entryLength(name without its namespace prefix) + valueLength(value).
 */
export const XATTR_ROOM = { inode: INODE_SIZE - 128 - 32 - 8, block: BLOCK_SIZE - 32 - 4 };

/** The bytes a value takes on disk: POSIX ACLs are stored in ext4's shorter format. */
function storedValueLength(name: string, hex: string): number {
  const bytes = hex.length / 2;
  if (!isAclXattr(name)) return bytes;
  try {
    return ext4AclBytes(aclFromXattr(Buffer.from(hex, 'hex')));
  } catch {
    return bytes;
  }
}

/**
 * Places the xattrs as libext2fs does, one ea_set at a time in the order the
 * builder issues them (sorted names): into the inode while it has room, else
 * into the block. Returns undefined when they fit, else why not.
 */
export function xattrsDoNotFit(xattrs: Record<string, string>): string | undefined {
  let inodeFree = XATTR_ROOM.inode;
  let blockFree = XATTR_ROOM.block;
  let total = 0;
  for (const name of Object.keys(xattrs).sort()) {
    const needed = entryLength(shortNameLength(name) ?? Buffer.byteLength(name)) + valueLength(storedValueLength(name, xattrs[name]));
    total += needed;
    if (needed <= inodeFree) inodeFree -= needed;
    else if (needed <= blockFree) blockFree -= needed;
    else {
      return `its xattrs need ${total}+ bytes on disk (${name} alone: ${needed} bytes, a 16-byte header plus name and value rounded to 4), ` +
        `but ext4 keeps an inode's xattrs in ${XATTR_ROOM.inode} bytes inside the 256-byte inode plus one ${BLOCK_SIZE}-byte block ` +
        `(${XATTR_ROOM.block} bytes for entries); ${blockFree} bytes of the block were left when ${name} came`;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// The check

export interface LimitProblem {
  path: string;
  why: string;
}

function checkInteger(v: number | undefined, min: number, max: number): boolean {
  return v === undefined || (Number.isSafeInteger(v) && v >= min && v <= max);
}

/** Every way `e` exceeds what the image can hold. Pure. */
export function entryProblems(e: ManifestEntry): string[] {
  const out: string[] = [];
  if (e.path !== '/') {
    for (const part of e.path.split('/').slice(1)) {
      const len = Buffer.byteLength(part);
      if (len > NAME_MAX) out.push(`a name of ${len} bytes (${JSON.stringify(part.slice(0, 24))}...): ext4 names hold at most ${NAME_MAX} bytes`);
    }
    if (/[\n\r]/.test(e.path)) out.push('a newline or carriage return in its name: part-image builds with debugfs scripts, whose lines cannot carry one');
  }
  if (!checkInteger(e.uid, 0, ID_MAX)) out.push(`uid ${e.uid}: ext4 owners are whole numbers 0 .. ${ID_MAX} (${ID_MAX + 1} is (uid_t)-1, "no owner")`);
  if (!checkInteger(e.gid, 0, ID_MAX)) out.push(`gid ${e.gid}: ext4 groups are whole numbers 0 .. ${ID_MAX} (${ID_MAX + 1} is (gid_t)-1, "no group")`);
  if (!checkInteger(e.mtime, MTIME_MIN, MTIME_MAX)) {
    out.push(`mtime ${e.mtime} (${isoTime(e.mtime!)}): ext4 stores ${MTIME_RANGE}`);
  }
  if (e.type === 'symlink') {
    const len = Buffer.byteLength(e.target ?? '');
    if (len === 0) out.push('an empty symlink target: Linux cannot store one');
    if (len > SYMLINK_MAX) out.push(`a symlink target of ${len} bytes: ext4 holds at most ${SYMLINK_MAX} (one block with its NUL)`);
    if (/[\n\r\0]/.test(e.target ?? '')) out.push('a newline, carriage return or NUL in its symlink target: a debugfs script line cannot carry it');
  }
  if ((e.type === 'char' || e.type === 'block') && e.rdev !== undefined) {
    const [major, minor] = e.rdev.split(',').map(Number);
    if (!checkInteger(major, 0, MAJOR_MAX) || !checkInteger(minor, 0, MINOR_MAX)) {
      out.push(`device number ${e.rdev}: Linux device numbers are major 0 .. ${MAJOR_MAX}, minor 0 .. ${MINOR_MAX}`);
    }
  }
  if (e.type === 'file' && (e.size ?? 0) > FILE_SIZE_MAX) {
    out.push(`a file of ${e.size} bytes: ext4 with ${BLOCK_SIZE}-byte blocks holds files up to ${FILE_SIZE_MAX} bytes (16 TiB - 4 KiB)`);
  }
  if (e.nlink !== undefined && e.nlink > LINK_MAX) out.push(`${e.nlink} hard links to one file: ext4 holds at most ${LINK_MAX}`);
  const xattrs = e.xattrs ?? {};
  for (const name of Object.keys(xattrs)) {
    if (shortNameLength(name) === undefined) {
      out.push(`xattr ${JSON.stringify(name)}: ext4 stores only user.*, trusted.*, security.* and system.posix_acl_access/default`);
    } else if (Buffer.byteLength(name) > XATTR_NAME_MAX) {
      out.push(`xattr name of ${Buffer.byteLength(name)} bytes (${JSON.stringify(name.slice(0, 24))}...): at most ${XATTR_NAME_MAX}`);
    } else if (/[\n\r\0]/.test(name)) {
      out.push(`xattr name ${JSON.stringify(name)} has a newline, carriage return or NUL: a debugfs script line cannot carry it`);
    }
  }
  if (!e.hardlink && Object.keys(xattrs).length > 0) {
    const why = xattrsDoNotFit(xattrs);
    if (why) out.push(why);
  }
  return out;
}

/** All problems of a manifest, in path order. */
export function treeProblems(manifest: Manifest): LimitProblem[] {
  const out: LimitProblem[] = [];
  for (const e of manifest.entries) for (const why of entryProblems(e)) out.push({ path: e.path, why });
  return out;
}

const SHOWN = 10;

/**
 * Throws an InputError naming every entry (the first ten) that the image
 * cannot hold as it is. `label` names an entry the way its input does (a
 * tar member, a host path).
 */
export function checkTreeLimits(manifest: Manifest, source: string, label: (path: string) => string = (p) => p): void {
  const problems = treeProblems(manifest);
  if (problems.length === 0) return;
  const shown = (path: string) => {
    const l = label(path);
    return /[\x00-\x1f\x7f]/.test(l) ? JSON.stringify(l) : l;
  };
  const lines = problems.slice(0, SHOWN).map((p) => `  ${shown(p.path)}: ${p.why}`);
  if (problems.length > SHOWN) lines.push(`  ... and ${problems.length - SHOWN} more`);
  throw new InputError(
    `${problems.length === 1 ? 'an entry' : `${problems.length} entries`} of ${source} cannot be stored in an ext4 image as ${problems.length === 1 ? 'it is' : 'they are'}:\n${lines.join('\n')}`,
    'Fix these entries in the input (part-image never changes a value to make it fit).',
  );
}
