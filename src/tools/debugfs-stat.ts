// Parses `stat <N>` as debugfs 1.47.0 prints it: mode, owner, size, links,
// mtime, xattrs, device numbers, inline data and the block map, one inode or
// many, each after its prompt (debugfs's command loop, tools/debugfs.ts
// DebugfsSession). Tested on captured real output
// (test/fixtures/debugfs/); the facts it relies on are listed at the top of
// tools/debugfs.ts.
import { DEBUGFS_PROMPT, fromBinary, toBinary } from './debugfs-text.js';
import { parseXattrLine } from './debugfs-xattr.js';

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
const RANGE = /^\((\d+)(?:-(\d+))?(\[u\])?\):(\d+)(?:-(\d+))?$/;
const META_RANGE = /^\((?:ETB\d+|IND|DIND|TIND)\):\d+$/;

/** Parses an extent or block list line: "(0-2):3754-3756, (3[u]):99, (ETB0):12". */
export function parseBlockList(line: string): Extent[] {
  const extents: Extent[] = [];
  // Most files are one extent: no list to split.
  for (const part of line.includes(', ') ? line.split(', ') : [line]) {
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

/**
 * The xattrs of an inode stat printed none for, one Map for all of them (two
 * Maps per inode were a fifth of what parsing allocated): setting on it is a
 * bug, and throws.
 */
class NoXattrs<V> extends Map<string, V> {
  override set(): this {
    throw new Error('an inode stat printed no xattrs for: give it a Map of its own first');
  }
}
const NO_XATTRS = new NoXattrs<Buffer | null>();
const NO_LENGTHS = new NoXattrs<number>();

interface StatBuilder {
  stat?: InodeStat;
  errors: string[];
  inXattrs: boolean;
  expectBlockList: boolean;
}

/**
 * Parses the output of many `stat` commands (or of a single one), a section
 * for each prompt, in order, as one stream (what comes before the first
 * prompt, if anything, is a section of its own). A fast symlink's target is
 * printed raw (it may hold newlines, quotes, even a prompt), so it is taken
 * by its size, never by searching; nothing else stat prints is raw.
 */
export function parseStatSections(text: string | Buffer): { stat?: InodeStat; errors: string[] }[] {
  const s = toBinary(text);
  const out: StatBuilder[] = [];
  let cur: StatBuilder | undefined;
  const begin = (): StatBuilder => {
    const b: StatBuilder = { errors: [], inXattrs: false, expectBlockList: false };
    out.push(b);
    return b;
  };
  let pos = 0;
  while (pos < s.length) {
    // A command's output starts right after its prompt; one with no output is a prompt after a prompt.
    while (s.startsWith(DEBUGFS_PROMPT, pos)) {
      pos += DEBUGFS_PROMPT.length;
      cur = begin();
    }
    if (pos >= s.length) break;
    let nl = s.indexOf('\n', pos);
    if (nl < 0) nl = s.length;
    // Most lines of an inode carry nothing the readers use: passed over without being cut out.
    if (cur?.stat && !cur.expectBlockList && !cur.inXattrs && isSkipped(s, pos, nl)) {
      pos = nl + 1;
      continue;
    }
    const line = s.slice(pos, nl);
    const lineStart = pos;
    pos = nl + 1;
    cur ??= begin();
    const st = cur.stat;
    if (cur.expectBlockList) {
      cur.expectBlockList = false;
      if (st && line.startsWith('(')) {
        try {
          st.extents = parseBlockList(line);
        } catch (err) {
          // An error that landed inside the list (stderr is written at once, stdout in pieces).
          cur.errors.push(`${(err as Error).message}`);
        }
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
        uid: 0, gid: 0, size: 0, links: 0, xattrs: NO_XATTRS, xattrLengths: NO_LENGTHS, errors: cur.errors,
      };
      continue;
    }
    if (!st) {
      if (line !== '') cur.errors.push(fromBinary(line));
      continue;
    }
    // The empty line after an empty block list.
    if (line === '') continue;
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
      if (st.xattrs === NO_XATTRS) {
        st.xattrs = new Map();
        st.xattrLengths = new Map();
      }
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
        // debugfs prints the bytes up to the first NUL of the 60: not the size.
        cur.errors.push(`the fast symlink target is not as long as the inode's size (${st.size})`);
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
  return out;
}

const FAST_LINK = 'Fast link dest: "';

/**
 * Whether the line of `s` from `pos` to `nl` is one of stat's lines that
 * carry nothing the readers use (or empty), told by its first byte first:
 * this runs for every line, about 15 per inode.
 */
function isSkipped(s: string, pos: number, nl: number): boolean {
  if (nl === pos) return true;
  switch (s.charCodeAt(pos)) {
    case 0x47: return s.startsWith('Generation: ', pos); // G
    case 0x46: return s.startsWith('File ACL: ', pos) || s.startsWith('Fragment: ', pos); // F
    case 0x20: return s.startsWith(' ctime: ', pos) || s.startsWith(' atime: ', pos);
    case 0x63: return s.startsWith('crtime: ', pos); // c
    case 0x53: return s.startsWith('Size of extra', pos); // S
    case 0x49: return s.startsWith('Inode checksum: ', pos); // I
    default: return false;
  }
}
// Other lines that are not errors.
const KNOWN_LINE = /^(?:Generation: |File ACL: |Fragment: |Inode checksum: |Size of extra inode fields: |TOTAL: | ?[acd]time: |crtime: |Project: )/;

/** Parses the output of one `stat <N>` command (with or without its prompt). */
export function parseStat(text: string | Buffer): InodeStat {
  const all = parseStatSections(text);
  const st = all[0]?.stat;
  if (!st) throw new Error(`not a debugfs stat output: ${all[0]?.errors.join('; ') || toBinary(text).slice(0, 200)}`);
  return st;
}

