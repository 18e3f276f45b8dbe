// POSIX ACLs between their text form (what tar archives carry in pax
// SCHILY.acl.access / SCHILY.acl.default) and the binary value the Linux
// kernel keeps in the system.posix_acl_access / system.posix_acl_default
// xattrs (what `getfattr -e hex` shows, and what the manifest compares).
//
// Binary layout (include/uapi/linux/posix_acl_xattr.h): le32 version (2),
// then one 8-byte record per entry: le16 tag, le16 perm, le32 id. The
// *_OBJ, MASK and OTHER entries carry id 0xffffffff. Entries are sorted by
// tag, then id, as the kernel and libacl write them.
//
// ext4 keeps them on disk in its own, shorter format (fs/ext4/acl.h, what
// debugfs prints): le32 version (1), then 4 bytes (le16 tag, le16 perm) for
// the *_OBJ, MASK and OTHER entries and 8 (with le32 id) for USER and GROUP.
// aclDiskToXattr() reads it, ext4AclBytes() counts it.
//
// Pure functions, no I/O. The one place that knows both formats, and which
// xattr names hold an ACL (isAclXattr).

export const ACL_XATTR_VERSION = 2;
export const ACL_UNDEFINED_ID = 0xffffffff;

export const ACL_TAG = {
  USER_OBJ: 0x01,
  USER: 0x02,
  GROUP_OBJ: 0x04,
  GROUP: 0x08,
  MASK: 0x10,
  OTHER: 0x20,
} as const;

export type AclTag = (typeof ACL_TAG)[keyof typeof ACL_TAG];

export interface AclEntry {
  tag: AclTag;
  /** rwx bits: 4 read, 2 write, 1 execute. */
  perm: number;
  /** uid/gid for USER/GROUP, ACL_UNDEFINED_ID otherwise. */
  id: number;
}

export type AclKind = 'access' | 'default';

/** The two xattrs that hold POSIX ACLs. */
export const ACL_XATTR_NAMES = ['system.posix_acl_access', 'system.posix_acl_default'] as const;

export function isAclXattr(name: string): boolean {
  return (ACL_XATTR_NAMES as readonly string[]).includes(name);
}

/** Maps a user or group name used in an ACL text to its numeric id, or undefined when unknown. */
export type AclNameResolver = (kind: 'user' | 'group', name: string) => number | undefined;

/** The ACL text or binary value is malformed. Callers wrap it with the file it belongs to. */
export class AclError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AclError';
  }
}

const TAG_NAMES: Record<string, 'user' | 'group' | 'mask' | 'other'> = {
  u: 'user', user: 'user',
  g: 'group', group: 'group',
  m: 'mask', mask: 'mask',
  o: 'other', other: 'other',
};

function parsePerm(text: string, entry: string): number {
  let perm = 0;
  for (const c of text) {
    if (c === 'r') perm |= 4;
    else if (c === 'w') perm |= 2;
    else if (c === 'x') perm |= 1;
    else if (c !== '-') throw new AclError(`bad permission "${text}" in ACL entry "${entry}"`);
  }
  return perm;
}

function parseId(text: string): number | undefined {
  if (!/^[0-9]+$/.test(text)) return undefined;
  const n = Number(text);
  return n < ACL_UNDEFINED_ID ? n : undefined;
}

/**
 * Parses the text form of one ACL into sorted, validated entries.
 *
 * Accepts what the tools write:
 * - GNU tar / getfacl: newline separated, `user::rw-`, `user:bob:r--`, `user:1234:r--`,
 *   `# comments` and `#effective:` remarks;
 * - star / bsdtar: comma separated, with the numeric id as a 4th field: `user:bob:r--:1234`
 *   (the id wins over the name);
 * - short tags (u, g, m, o) and a `default:` / `d:` prefix (ignored: the caller says which ACL it is).
 *
 * Names without an id are looked up with `resolve`; an unknown name is an AclError.
 * A missing mask is computed as setfacl does (the union of the group class)
 * when named entries need one.
 */
export function parseAclText(text: string, resolve?: AclNameResolver): AclEntry[] {
  const entries: AclEntry[] = [];
  for (const raw of text.split(/[,\n]/)) {
    const hash = raw.indexOf('#');
    const item = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
    if (item === '') continue;
    let fields = item.split(':').map((f) => f.trim());
    if (fields[0] === 'default' || fields[0] === 'd') fields = fields.slice(1);
    const tagName = TAG_NAMES[fields[0] ?? ''];
    if (!tagName) throw new AclError(`unknown tag in ACL entry "${item}"`);
    // mask and other may be written with or without the empty qualifier.
    if ((tagName === 'mask' || tagName === 'other') && fields.length === 2) fields = [fields[0], '', fields[1]];
    if (fields.length < 3 || fields.length > 4) throw new AclError(`malformed ACL entry "${item}"`);
    const [, qualifier, permText, idText] = fields;
    const perm = parsePerm(permText, item);
    if (tagName === 'mask' || tagName === 'other') {
      if (qualifier !== '') throw new AclError(`ACL entry "${item}" must not name a user or group`);
      entries.push({ tag: tagName === 'mask' ? ACL_TAG.MASK : ACL_TAG.OTHER, perm, id: ACL_UNDEFINED_ID });
      continue;
    }
    if (qualifier === '') {
      entries.push({ tag: tagName === 'user' ? ACL_TAG.USER_OBJ : ACL_TAG.GROUP_OBJ, perm, id: ACL_UNDEFINED_ID });
      continue;
    }
    let id: number | undefined;
    if (idText !== undefined && idText !== '') {
      id = parseId(idText);
      if (id === undefined) throw new AclError(`bad numeric id "${idText}" in ACL entry "${item}"`);
    } else {
      id = parseId(qualifier) ?? resolve?.(tagName, qualifier);
    }
    if (id === undefined) {
      throw new AclError(`ACL entry "${item}" names ${tagName} "${qualifier}" without a numeric id, and the name is unknown`);
    }
    entries.push({ tag: tagName === 'user' ? ACL_TAG.USER : ACL_TAG.GROUP, perm, id });
  }
  return completeAcl(entries);
}

/** Sorts, checks and (when needed) adds the mask, as acl_valid() + acl_calc_mask() would. */
export function completeAcl(input: AclEntry[]): AclEntry[] {
  const entries = sortAcl(input);
  for (let i = 1; i < entries.length; i++) {
    if (entries[i].tag === entries[i - 1].tag && entries[i].id === entries[i - 1].id) {
      throw new AclError(`duplicate ACL entry ${entryText(entries[i])}`);
    }
  }
  const count = (tag: AclTag) => entries.filter((e) => e.tag === tag).length;
  for (const [tag, name] of [[ACL_TAG.USER_OBJ, 'user::'], [ACL_TAG.GROUP_OBJ, 'group::'], [ACL_TAG.OTHER, 'other::']] as const) {
    if (count(tag) !== 1) throw new AclError(`ACL lacks the ${name} entry`);
  }
  const named = entries.some((e) => e.tag === ACL_TAG.USER || e.tag === ACL_TAG.GROUP);
  if (named && count(ACL_TAG.MASK) === 0) {
    let perm = 0;
    for (const e of entries) if (e.tag === ACL_TAG.USER || e.tag === ACL_TAG.GROUP || e.tag === ACL_TAG.GROUP_OBJ) perm |= e.perm;
    entries.push({ tag: ACL_TAG.MASK, perm, id: ACL_UNDEFINED_ID });
    return sortAcl(entries);
  }
  return entries;
}

export function sortAcl(entries: AclEntry[]): AclEntry[] {
  return [...entries].sort((a, b) => a.tag - b.tag || a.id - b.id);
}

/**
 * True when the access ACL says no more than the mode bits: no named user or
 * group entries. The kernel then keeps no system.posix_acl_access xattr.
 */
export function isMinimalAcl(entries: AclEntry[]): boolean {
  return !entries.some((e) => e.tag === ACL_TAG.USER || e.tag === ACL_TAG.GROUP);
}

/** The binary xattr value of entries, in the order given. */
function encodeXattr(entries: readonly AclEntry[]): Buffer {
  const buf = Buffer.alloc(4 + 8 * entries.length);
  buf.writeUInt32LE(ACL_XATTR_VERSION, 0);
  entries.forEach((e, i) => {
    buf.writeUInt16LE(e.tag, 4 + 8 * i);
    buf.writeUInt16LE(e.perm, 6 + 8 * i);
    buf.writeUInt32LE(e.id, 8 + 8 * i);
  });
  return buf;
}

/** The binary xattr value of an ACL (entries are sorted first). */
export function aclToXattr(entries: AclEntry[]): Buffer {
  return encodeXattr(sortAcl(entries));
}

const EXT4_ACL_VERSION = 1;
const isNamed = (tag: number) => tag === ACL_TAG.USER || tag === ACL_TAG.GROUP;
const isShort = (tag: number) => tag === ACL_TAG.USER_OBJ || tag === ACL_TAG.GROUP_OBJ || tag === ACL_TAG.MASK || tag === ACL_TAG.OTHER;

/**
 * Converts a system.posix_acl_* value from the ext4 on-disk format to the
 * Linux xattr format that getfattr shows, as the kernel's
 * posix_acl_to_xattr() writes it (entries in their stored order, id
 * 0xffffffff where there is none). A value already in the xattr format is
 * returned as is.
 */
export function aclDiskToXattr(disk: Buffer): Buffer {
  if (disk.length >= 4 && disk.readUInt32LE(0) === ACL_XATTR_VERSION) return disk;
  if (disk.length < 4 || disk.readUInt32LE(0) !== EXT4_ACL_VERSION) {
    throw new Error(`ACL value is neither ext4 (version 1) nor Linux (version 2) format: ${disk.toString('hex')}`);
  }
  const entries: AclEntry[] = [];
  let off = 4;
  while (off < disk.length) {
    if (off + 4 > disk.length) throw new Error(`truncated ext4 ACL: ${disk.toString('hex')}`);
    const tag = disk.readUInt16LE(off);
    const perm = disk.readUInt16LE(off + 2);
    if (isShort(tag)) {
      entries.push({ tag: tag as AclTag, perm, id: ACL_UNDEFINED_ID });
      off += 4;
    } else if (isNamed(tag)) {
      if (off + 8 > disk.length) throw new Error(`truncated ext4 ACL: ${disk.toString('hex')}`);
      entries.push({ tag: tag as AclTag, perm, id: disk.readUInt32LE(off + 4) });
      off += 8;
    } else {
      throw new Error(`unknown tag 0x${tag.toString(16)} in ext4 ACL: ${disk.toString('hex')}`);
    }
  }
  return encodeXattr(entries);
}

/** The bytes an ACL takes in ext4's on-disk format. */
export function ext4AclBytes(entries: readonly AclEntry[]): number {
  return 4 + entries.reduce((n, e) => n + (isNamed(e.tag) ? 8 : 4), 0);
}

/** Decodes a system.posix_acl_* xattr value. */
export function aclFromXattr(buf: Buffer): AclEntry[] {
  if (buf.length < 4 || (buf.length - 4) % 8 !== 0) throw new AclError(`ACL xattr has a bad length (${buf.length} bytes)`);
  const version = buf.readUInt32LE(0);
  if (version !== ACL_XATTR_VERSION) throw new AclError(`ACL xattr has version ${version}, expected ${ACL_XATTR_VERSION}`);
  const entries: AclEntry[] = [];
  const tags = new Set<number>(Object.values(ACL_TAG));
  for (let off = 4; off < buf.length; off += 8) {
    const tag = buf.readUInt16LE(off);
    if (!tags.has(tag)) throw new AclError(`ACL xattr has an unknown tag 0x${tag.toString(16)}`);
    entries.push({ tag: tag as AclTag, perm: buf.readUInt16LE(off + 2), id: buf.readUInt32LE(off + 4) });
  }
  return entries;
}

function entryText(e: AclEntry): string {
  const perm = `${e.perm & 4 ? 'r' : '-'}${e.perm & 2 ? 'w' : '-'}${e.perm & 1 ? 'x' : '-'}`;
  switch (e.tag) {
    case ACL_TAG.USER_OBJ: return `user::${perm}`;
    case ACL_TAG.USER: return `user:${e.id}:${perm}`;
    case ACL_TAG.GROUP_OBJ: return `group::${perm}`;
    case ACL_TAG.GROUP: return `group:${e.id}:${perm}`;
    case ACL_TAG.MASK: return `mask::${perm}`;
    case ACL_TAG.OTHER: return `other::${perm}`;
  }
}

/** Numeric, comma separated text form (`getfacl -n -c` style, on one line). */
export function aclToText(entries: AclEntry[]): string {
  return sortAcl(entries).map(entryText).join(',');
}

/**
 * The hex xattr value (as the manifest stores it) for an ACL text, or
 * undefined when the kernel would keep no xattr: an empty text, or an access
 * ACL that says no more than the mode bits.
 */
export function aclTextToXattrHex(text: string, kind: AclKind, resolve?: AclNameResolver): string | undefined {
  if (text.replace(/#[^,\n]*/g, '').trim() === '') return undefined;
  const entries = parseAclText(text, resolve);
  if (kind === 'access' && isMinimalAcl(entries)) return undefined;
  return aclToXattr(entries).toString('hex');
}

/** The xattr name that holds an ACL of this kind. */
export function aclXattrName(kind: AclKind): string {
  return kind === 'access' ? 'system.posix_acl_access' : 'system.posix_acl_default';
}
