// Pure parsers of what debugfs 1.47.0 prints (ls -p, stat, stats, ea_get),
// and the ext4 ACL codec. Tested on captured real output
// (test/fixtures/debugfs/). The facts they rely on are listed at the top of
// tools/debugfs.ts, which runs debugfs and re-exports these.

// ---------------------------------------------------------------------------
// Parsing `ls -p`

export interface LsEntry {
  inode: number;
  /** st_mode with the type bits, as printed in octal. */
  mode: number;
  uid: number;
  gid: number;
  name: string;
  /** Size (0 for devices); undefined for directories. */
  size?: number;
}

export interface LsSection {
  /** The command echoed before the listing (e.g. "ls -p <12>"). */
  command: string;
  entries: LsEntry[];
  /** Lines that are neither records nor echo lines (errors). */
  errors: string[];
}

// /INODE/MODE/UID/GID/NAME/SIZE/ or /INODE/MODE/UID/GID/NAME// for a directory.
// A name can't contain "/", but it can contain a newline: [^/]* spans lines.
const LS_RECORD = /\/(\d+)\/([0-7]+)\/(-?\d+)\/(-?\d+)\/([^/]*)\/(\d*)\/\n/y;
const ECHO_LINE = /debugfs: ([^\n]*)\n/y;
const ANY_LINE = /([^\n]*)(?:\n|$)/y;

export function toBinary(text: string | Buffer): string {
  return typeof text === 'string' ? Buffer.from(text, 'utf8').toString('latin1') : text.toString('latin1');
}

export function fromBinary(s: string): string {
  return Buffer.from(s, 'latin1').toString('utf8');
}

/**
 * Parses the output of one or more `ls -p` commands of a `debugfs -f` run
 * (with or without the echo lines). "." and "..", and empty slots (inode 0),
 * are left out. uid and gid are returned unsigned.
 */
export function parseLsPSections(text: string | Buffer): LsSection[] {
  const s = toBinary(text);
  const sections: LsSection[] = [];
  let current: LsSection | undefined;
  let pos = 0;
  while (pos < s.length) {
    LS_RECORD.lastIndex = pos;
    const rec = LS_RECORD.exec(s);
    if (rec) {
      pos = LS_RECORD.lastIndex;
      if (!current) sections.push((current = { command: '', entries: [], errors: [] }));
      const inode = Number(rec[1]);
      const name = fromBinary(rec[5]);
      if (inode === 0 || name === '.' || name === '..') continue;
      const entry: LsEntry = {
        inode,
        mode: parseInt(rec[2], 8),
        uid: Number(rec[3]) >>> 0,
        gid: Number(rec[4]) >>> 0,
        name,
      };
      if (rec[6] !== '') entry.size = Number(rec[6]);
      current.entries.push(entry);
      continue;
    }
    ECHO_LINE.lastIndex = pos;
    const echo = ECHO_LINE.exec(s);
    if (echo) {
      pos = ECHO_LINE.lastIndex;
      sections.push((current = { command: fromBinary(echo[1]), entries: [], errors: [] }));
      continue;
    }
    ANY_LINE.lastIndex = pos;
    const line = ANY_LINE.exec(s)!;
    pos = ANY_LINE.lastIndex;
    if (line[1] !== '') {
      if (!current) sections.push((current = { command: '', entries: [], errors: [] }));
      current.errors.push(fromBinary(line[1]));
    }
  }
  return sections;
}

/** The entries of one `ls -p` listing (all listings concatenated when there are several). */
export function parseLsP(text: string | Buffer): LsEntry[] {
  return parseLsPSections(text).flatMap((s) => s.entries);
}

// ---------------------------------------------------------------------------
// Parsing `stat <N>`

export type DebugfsFileType = 'directory' | 'regular' | 'symlink' | 'block special' | 'character special' | 'FIFO' | 'socket';

const TYPE_BITS: Record<DebugfsFileType, number> = {
  directory: 0o040000,
  regular: 0o100000,
  symlink: 0o120000,
  'block special': 0o060000,
  'character special': 0o020000,
  FIFO: 0o010000,
  socket: 0o140000,
};

export interface Extent {
  /** First logical block. */
  logical: number;
  /** First physical block. */
  physical: number;
  /** Number of blocks. */
  length: number;
  /** Allocated but unwritten: reads as zeros. */
  uninit: boolean;
}

export interface InodeStat {
  inode: number;
  type: DebugfsFileType;
  /** Full st_mode: type bits plus permission and setuid/setgid/sticky bits. */
  mode: number;
  flags: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  /** Seconds since the epoch (with the ext4 epoch bits of the extra field). */
  mtime?: number;
  /**
   * xattr name -> raw value. `null` when debugfs printed only the length (values
   * of 40 bytes and more in stat): read it with `ea_get -r -x`. ACLs are as
   * stored on disk here; see aclDiskToXattr().
   */
  xattrs: Map<string, Buffer | null>;
  /** Value lengths as printed, by name. */
  xattrLengths: Map<string, number>;
  /** Fast (or inline) symlink target, raw bytes decoded as UTF-8. */
  fastLink?: string;
  /** Device numbers of char and block devices. */
  rdev?: { major: number; minor: number };
  /** Data blocks: from EXTENTS (extent-mapped) or BLOCKS (block-mapped) lists. */
  extents?: Extent[];
  /** 'extents' or 'blocks' when a block map was printed. */
  blockMap?: 'extents' | 'blocks';
  /** Size of the inline data area, for inline-data inodes. */
  inlineDataSize?: number;
  /** Error lines printed instead of, or besides, the inode. */
  errors: string[];
}

const STAT_INODE = /^Inode: (\d+) +Type: (.*?) +Mode: +0?([0-7]+) +Flags: 0x([0-9a-f]+)$/;
const STAT_USER = /^User: +(-?\d+) +Group: +(-?\d+)(?: +Project: +-?\d+)? +Size: (\d+)$/;
const STAT_LINKS = /^Links: (\d+) +Blockcount: \d+$/;
const STAT_MTIME = /^ ?mtime: 0x([0-9a-f]{8})(?::([0-9a-f]{8}))? -- /;
const STAT_DEVICE = /^(?:\(New-style\) )?Device major\/minor number: (\d+):(\d+) /;
const STAT_INLINE = /^Size of inline data: (\d+)$/;
const XATTR_LINE = /^ {2}(.*) \((\d+)\)(?: = (.*))?$/;
const RANGE = /^\((\d+)(?:-(\d+))?(\[u\])?\):(\d+)(?:-(\d+))?$/;
const META_RANGE = /^\((?:ETB\d+|IND|DIND|TIND)\):\d+$/;

/** Decodes a C string as debugfs's print_c_string() writes it (binary string in, raw bytes out). */
export function decodeCString(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c !== 0x5c) {
      out.push(c & 0xff);
      continue;
    }
    const n = s[++i];
    switch (n) {
      case 'a': out.push(7); break;
      case 'b': out.push(8); break;
      case 'f': out.push(12); break;
      case 'n': out.push(10); break;
      case 't': out.push(9); break;
      case 'v': out.push(11); break;
      case 'x': {
        const m = /^[0-9a-fA-F]{1,2}/.exec(s.slice(i + 1, i + 3));
        if (!m) {
          out.push(0x78);
          break;
        }
        out.push(parseInt(m[0], 16));
        i += m[0].length;
        break;
      }
      default: {
        const m = /^[0-7]{1,3}/.exec(s.slice(i, i + 3));
        if (m) {
          out.push(parseInt(m[0], 8) & 0xff);
          i += m[0].length - 1;
        } else if (n !== undefined) {
          out.push(n.charCodeAt(0) & 0xff);
        }
      }
    }
  }
  return Buffer.from(out);
}

/** Decodes a value or name as print_xattr_string() writes it: "quoted", bare (names), or hex bytes. */
function decodeXattrText(text: string, isName: boolean): Buffer | undefined {
  if (/^(?:[0-9a-f]{2} )+$/.test(text)) return Buffer.from(text.replace(/ /g, ''), 'hex');
  if (isName) return decodeCString(text);
  if (text.length >= 2 && text.startsWith('"') && text.endsWith('"')) return decodeCString(text.slice(1, -1));
  return undefined;
}

/** Parses one xattr line of stat/ea_list/ea_get output ("  name (len) = value"). */
export function parseXattrLine(line: string): { name: string; length: number; value: Buffer | null } | undefined {
  // The name may itself contain " (N) = ": try every split, keep the first that decodes to the right length.
  const s = line.startsWith('  ') ? line : `  ${line}`;
  const re = / \((\d+)\)(?: = |$)/g;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const nameText = s.slice(2, m.index);
    const length = Number(m[1]);
    const rest = s.slice(m.index + m[0].length);
    const name = decodeXattrText(nameText, true);
    if (!name || name.length === 0) continue;
    if (!m[0].endsWith(' = ')) {
      if (m.index + m[0].length !== s.length) continue;
      return { name: name.toString('utf8'), length, value: length === 0 ? Buffer.alloc(0) : null };
    }
    const value = decodeXattrText(rest, false);
    if (!value || value.length !== length) continue;
    return { name: name.toString('utf8'), length, value };
  }
  const m = XATTR_LINE.exec(s);
  if (!m) return undefined;
  return { name: fromBinary(m[1]), length: Number(m[2]), value: null };
}

/** Parses an extent or block list line: "(0-2):3754-3756, (3[u]):99, (ETB0):12". */
export function parseBlockList(line: string): Extent[] {
  const extents: Extent[] = [];
  for (const part of line.split(', ')) {
    const item = part.trim();
    if (item === '' || META_RANGE.test(item)) continue;
    const m = RANGE.exec(item);
    if (!m) throw new Error(`unparsable block range "${item}" in: ${line.slice(0, 200)}`);
    const logical = Number(m[1]);
    const lastLogical = m[2] === undefined ? logical : Number(m[2]);
    const physical = Number(m[4]);
    const lastPhysical = m[5] === undefined ? physical : Number(m[5]);
    const length = lastLogical - logical + 1;
    if (lastPhysical - physical + 1 !== length) throw new Error(`inconsistent block range "${item}"`);
    extents.push({ logical, physical, length, uninit: m[3] !== undefined });
  }
  return extents;
}

interface StatBuilder {
  command: string;
  stat?: InodeStat;
  errors: string[];
  inXattrs: boolean;
  expectBlockList: boolean;
}

/**
 * Parses the output of many `stat` commands of one `debugfs -f` run (or of a
 * single one), in order, as one stream: a fast symlink's target is printed raw
 * (it may hold newlines, quotes, even an echo line), so it is taken by its
 * size, never by searching.
 */
export function parseStatSections(text: string | Buffer): { command: string; stat?: InodeStat; errors: string[] }[] {
  const s = toBinary(text);
  const out: StatBuilder[] = [];
  let cur: StatBuilder | undefined;
  const begin = (command: string): StatBuilder => {
    const b: StatBuilder = { command, errors: [], inXattrs: false, expectBlockList: false };
    out.push(b);
    return b;
  };
  let pos = 0;
  while (pos < s.length) {
    let nl = s.indexOf('\n', pos);
    if (nl < 0) nl = s.length;
    const line = s.slice(pos, nl);
    const lineStart = pos;
    pos = nl + 1;
    if (line.startsWith('debugfs: ')) {
      cur = begin(fromBinary(line.slice('debugfs: '.length)));
      continue;
    }
    if (!cur) cur = begin('');
    const st = cur.stat;
    if (cur.expectBlockList) {
      cur.expectBlockList = false;
      if (st && line.startsWith('(')) {
        st.extents = parseBlockList(line);
        continue;
      }
    }
    if (cur.inXattrs) {
      if (st && line.startsWith('  ')) {
        const x = parseXattrLine(line);
        if (x) {
          st.xattrs.set(x.name, x.value);
          st.xattrLengths.set(x.name, x.length);
          continue;
        }
      }
      cur.inXattrs = false;
    }
    let m: RegExpExecArray | null;
    if (line.startsWith('Inode: ') && (m = STAT_INODE.exec(line))) {
      const type = m[2] as DebugfsFileType;
      if (!(type in TYPE_BITS)) {
        cur.errors.push(`inode ${m[1]} has a bad type (${m[2]})`);
        continue;
      }
      cur.stat = {
        inode: Number(m[1]), type, mode: TYPE_BITS[type] | (parseInt(m[3], 8) & 0o7777), flags: parseInt(m[4], 16),
        uid: 0, gid: 0, size: 0, links: 0, xattrs: new Map(), xattrLengths: new Map(), errors: cur.errors,
      };
      continue;
    }
    if (!st) {
      if (line !== '') cur.errors.push(fromBinary(line));
      continue;
    }
    // Cheap prefix tests first: this runs for every line of ~25 per inode.
    if (line === '' || SKIP_PREFIXES.some((p) => line.startsWith(p))) continue;
    if (line.startsWith('User: ') && (m = STAT_USER.exec(line))) {
      st.uid = Number(m[1]) >>> 0;
      st.gid = Number(m[2]) >>> 0;
      st.size = Number(m[3]);
    } else if (line.startsWith('Links: ') && (m = STAT_LINKS.exec(line))) {
      st.links = Number(m[1]);
    } else if (line.includes('mtime: 0x') && (m = STAT_MTIME.exec(line))) {
      const lo = parseInt(m[1], 16) | 0;
      const epoch = m[2] === undefined ? 0 : parseInt(m[2], 16) & 3;
      st.mtime = lo + epoch * 2 ** 32;
    } else if (line === 'Extended attributes:') {
      cur.inXattrs = true;
    } else if (line === 'EXTENTS:' || line === 'BLOCKS:') {
      st.blockMap = line === 'EXTENTS:' ? 'extents' : 'blocks';
      st.extents = [];
      cur.expectBlockList = true;
    } else if (line.startsWith(FAST_LINK)) {
      const start = lineStart + FAST_LINK.length;
      st.fastLink = fromBinary(s.slice(start, start + st.size));
      // Resume after the target, its closing quote and the newline.
      pos = start + st.size;
      if (s.startsWith('"\n', pos)) pos += 2;
      else {
        const e = s.indexOf('\n', pos);
        pos = e < 0 ? s.length : e + 1;
      }
    } else if ((m = STAT_DEVICE.exec(line))) {
      st.rdev = { major: Number(m[1]), minor: Number(m[2]) };
    } else if ((m = STAT_INLINE.exec(line))) {
      st.inlineDataSize = Number(m[1]);
    } else if (!KNOWN_LINE.test(line)) {
      cur.errors.push(fromBinary(line));
    }
  }
  // What came before the first echo line (the version banner, with 2>&1) is no section.
  if (out.length > 1 && out[0].command === '' && !out[0].stat) out.shift();
  return out.map((b) => ({ command: b.command, stat: b.stat, errors: b.errors }));
}

const FAST_LINK = 'Fast link dest: "';
// Lines of stat output that carry nothing the readers use.
const SKIP_PREFIXES = ['Generation: ', 'File ACL: ', 'Fragment: ', ' ctime: ', ' atime: ', 'crtime: ', 'Size of extra', 'Inode checksum: '];
// Other lines that are not errors.
const KNOWN_LINE = /^(?:Generation: |File ACL: |Fragment: |Inode checksum: |Size of extra inode fields: |TOTAL: | ?[acd]time: |crtime: |Project: )/;

/** Parses the output of one `stat <N>` command (with or without its echo line). */
export function parseStat(text: string | Buffer): InodeStat {
  const all = parseStatSections(text);
  const st = all[0]?.stat;
  if (!st) throw new Error(`not a debugfs stat output: ${all[0]?.errors.join('; ') || toBinary(text).slice(0, 200)}`);
  return st;
}

// ---------------------------------------------------------------------------
// Parsing `ea_get -x` (superblock listings: tools/dumpe2fs.ts)

/** Parses `ea_get -x` (or -r -x) output: "name (len) = 01 02 ... \n". */
export function parseEaGetHex(text: string | Buffer): { name: string; value: Buffer } | undefined {
  const s = toBinary(text);
  for (const line of s.split('\n')) {
    if (!/ \(\d+\)/.test(line)) continue;
    const x = parseXattrLine(line);
    if (x && x.value) return { name: x.name, value: x.value };
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// POSIX ACLs: ext4 disk format -> Linux xattr format

const EXT4_ACL_VERSION = 1;
const POSIX_ACL_XATTR_VERSION = 2;
const SHORT_TAGS = new Set([0x01, 0x04, 0x10, 0x20]); // USER_OBJ, GROUP_OBJ, MASK, OTHER
const LONG_TAGS = new Set([0x02, 0x08]); // USER, GROUP

export function isAclXattr(name: string): boolean {
  return name === 'system.posix_acl_access' || name === 'system.posix_acl_default';
}

/**
 * Converts a system.posix_acl_* value from the ext4 on-disk format (version 1;
 * 4-byte entries for USER_OBJ, GROUP_OBJ, MASK, OTHER; 8-byte entries for USER,
 * GROUP) to the Linux xattr format that getfattr shows (version 2; 8-byte
 * entries; id 0xffffffff where there is none), as the kernel's
 * posix_acl_to_xattr() writes it. A value already in version 2 is returned as is.
 */
export function aclDiskToXattr(disk: Buffer): Buffer {
  if (disk.length >= 4 && disk.readUInt32LE(0) === POSIX_ACL_XATTR_VERSION) return disk;
  if (disk.length < 4 || disk.readUInt32LE(0) !== EXT4_ACL_VERSION) {
    throw new Error(`ACL value is neither ext4 (version 1) nor Linux (version 2) format: ${disk.toString('hex')}`);
  }
  const entries: number[][] = [];
  let off = 4;
  while (off < disk.length) {
    if (off + 4 > disk.length) throw new Error(`truncated ext4 ACL: ${disk.toString('hex')}`);
    const tag = disk.readUInt16LE(off);
    const perm = disk.readUInt16LE(off + 2);
    if (SHORT_TAGS.has(tag)) {
      entries.push([tag, perm, 0xffffffff]);
      off += 4;
    } else if (LONG_TAGS.has(tag)) {
      if (off + 8 > disk.length) throw new Error(`truncated ext4 ACL: ${disk.toString('hex')}`);
      entries.push([tag, perm, disk.readUInt32LE(off + 4)]);
      off += 8;
    } else {
      throw new Error(`unknown tag 0x${tag.toString(16)} in ext4 ACL: ${disk.toString('hex')}`);
    }
  }
  const out = Buffer.alloc(4 + 8 * entries.length);
  out.writeUInt32LE(POSIX_ACL_XATTR_VERSION, 0);
  entries.forEach(([tag, perm, id], k) => {
    out.writeUInt16LE(tag, 4 + 8 * k);
    out.writeUInt16LE(perm, 6 + 8 * k);
    out.writeUInt32LE(id, 8 + 8 * k);
  });
  return out;
}
