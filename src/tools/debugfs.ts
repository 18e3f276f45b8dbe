// debugfs (e2fsprogs) as a batch tool: one process runs a whole script given
// with -f, and pure parsers read what it prints. Used to read images rootless
// (image/debugfs-reader.ts) and to write them (the builder's scripts).
//
// Facts about debugfs 1.47.0 this module relies on (checked in its source and
// by hand):
//
// Script files (-f FILE)
// - Every line is echoed as "debugfs: LINE\n" on stdout before it runs (one
//   space; the interactive prompt has two). stdout and stderr are unbuffered
//   in this mode, so with both on one file descriptor every error lands right
//   after the echo of the command that caused it. runDebugfs() does exactly
//   that and splits the output per command.
// - Lines are read with fgets(BUFSIZ=8192): a line of 8191 bytes or more is cut
//   and its tail runs as a second command. A "\r" ends the line early. A line
//   whose first byte is "#" is a comment; one starting with "!" runs a shell.
//   runDebugfs() refuses all of these.
// - The exit status is 0 even when commands fail (it counts only unknown
//   commands). Look at the sections' output for errors.
//
// Arguments (lib/ss/parse.c)
// - Split at spaces and tabs only. A double quote starts or ends a quoted
//   part anywhere in a word; inside quotes, "" stands for one literal ". A
//   backslash is NOT special to the parser: `/back\slash` is that name.
//   Quotes can't carry a newline, "\r" or NUL: such names can't be passed.
// - Quoting does not protect from getopt: commands that take options
//   (ea_set, ea_get, ls, dump, ...) use GNU getopt, which permutes, so ANY
//   argument starting with "-" is taken as an option, quoted or not. Pass
//   absolute paths (they start with "/") or `<INODE>` file specs.
// - A file spec of the form `<N>` (whole argument) is an inode number, so a
//   relative name like "<12>" can't be used as a name: use absolute paths.
// - ea_set's inline value is further decoded by parse_c_string(): C escapes
//   (\n, \t, \\, \NNN octal, \xHH) and it stops at the first raw `"`.
//   encodeDebugfsValue() writes every byte as \xHH (any bytes, NUL included).
//   `ea_set -f FILE` reads the value from a host file instead (at most one
//   block: blocksize bytes).
//
// Output of stat <N> (debugfs.c internal_dump_inode, xattrs.c)
// - xattr values under 40 bytes: a quoted C string (escapes \a \b \f \n \t \v
//   \\ \' \" and \NNN octal for other non-printables) when more than 7/8 of
//   the bytes are printable, otherwise hex bytes each followed by a space.
//   Empty values print only "name (0)". Values of 40 bytes and more print only
//   "name (LEN)": read them with `ea_get -r -x`. Names follow the same rule
//   (a name with mostly non-ASCII bytes is printed as hex).
// - system.posix_acl_* values are shown as stored on disk (ext4_acl, version
//   1, 4-byte entries for USER_OBJ/GROUP_OBJ/MASK/OTHER), not in the Linux
//   xattr format (version 2, 8-byte entries) that getfattr shows:
//   aclDiskToXattr() converts. `ea_get` without -r converts too, but writes
//   id 0 instead of the kernel's 0xffffffff in the short entries, so its
//   output differs from getfattr's. `ea_set` without -r takes the Linux
//   format (as getfattr prints it) and stores the disk format.
// - "system.data" is the inline-data area, not an xattr a user sees.
// - uid and gid are printed as signed 32-bit numbers (4000000000 shows as
//   -294967296); so are they in `ls -p`.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatCommand, run } from '../exec.js';
import { withScope } from '../cleanup.js';
import { EnvironmentError, ToolError } from '../errors.js';

// ---------------------------------------------------------------------------
// Running scripts

export interface DebugfsOptions {
  /** Open the image read-write (-w). Default: read-only. */
  write?: boolean;
  /**
   * Send stderr into stdout (one descriptor; both are unbuffered in -f mode),
   * so that each command's errors land in its own section, right after its
   * echo line; `stderr` is then empty. Default: separate, and `stderr` holds
   * every error of the run without saying which command caused it.
   */
  mergeStderr?: boolean;
  /** Kill debugfs after this many ms. */
  timeoutMs?: number;
  /** Extra debugfs options placed before -f (e.g. ['-c'] for catastrophic mode). */
  extraArgs?: string[];
}

export interface DebugfsSection {
  /** The command as given. */
  command: string;
  /** What debugfs printed for it (stdout; plus stderr with mergeStderr), without the echo line. */
  output: string;
}

export interface DebugfsResult {
  /** The debugfs command line that ran, for messages (the script file is gone by then). */
  command: string;
  /** stdout, decoded as UTF-8 (it starts with the echo line of the first command). */
  stdout: string;
  /** stderr, decoded as UTF-8, without the version banner. Empty with mergeStderr. */
  stderr: string;
  /** stdout as bytes: names and symlink targets are printed raw. */
  raw: Buffer;
  /** One per command, in order. */
  sections: DebugfsSection[];
}

/** The longest script line debugfs reads whole (fgets with BUFSIZ 8192, plus the newline). */
export const DEBUGFS_MAX_LINE = 8190;

/** Throws unless `command` is one line that debugfs -f runs exactly as written. */
export function checkDebugfsCommand(command: string): void {
  if (/[\n\r\0]/.test(command)) throw new Error(`debugfs command contains a newline, CR or NUL: ${JSON.stringify(command)}`);
  const start = command.replace(/^[ \t]+/, '');
  if (start === '' || start.startsWith('#') || start.startsWith('!')) {
    throw new Error(`debugfs command is empty, a comment or a shell escape: ${JSON.stringify(command)}`);
  }
  if (Buffer.byteLength(command) > DEBUGFS_MAX_LINE) {
    throw new Error(`debugfs command longer than ${DEBUGFS_MAX_LINE} bytes (debugfs would split it): ${command.slice(0, 80)}...`);
  }
}

// Output goes to files, not pipes: the bytes stay exact (no UTF-8 decoding on
// the way) and memory holds one copy. A fixed script; every value is an argument.
const WRAPPER = 'out=$1; err=$2; shift 2; exec debugfs "$@" >"$out" 2>"$err"';
const WRAPPER_MERGED = 'out=$1; shift 2; exec debugfs "$@" >"$out" 2>&1';
const BANNER = /^debugfs \d+\.\d+[^\n]*\n/;

/**
 * Runs `commands` in one debugfs process: `debugfs [-w] -f CMDFILE IMAGE`.
 * Throws ToolError when debugfs cannot open the image or does not run at all;
 * failures of single commands do not throw (debugfs exits 0 anyway): look at
 * `stderr`, or at the sections with `mergeStderr`.
 */
export async function runDebugfs(image: string, commands: string[], opts: DebugfsOptions = {}): Promise<DebugfsResult> {
  for (const c of commands) checkDebugfsCommand(c);
  return withScope(async (scope) => {
    const dir = await scope.tempDir('part-image-debugfs-');
    const cmdFile = join(dir, 'commands');
    const outFile = join(dir, 'stdout');
    const errFile = join(dir, 'stderr');
    await writeFile(cmdFile, commands.map((c) => `${c}\n`).join(''));
    const args = [...(opts.write ? ['-w'] : []), ...(opts.extraArgs ?? []), '-f', cmdFile, image];
    const display = `${formatCommand('debugfs', [...args.slice(0, -3), '-f', 'SCRIPT', image])}  # SCRIPT: ${commands.length} command(s), the first: ${commands[0] ?? '(none)'}`;
    const result = await run('sh', ['-c', opts.mergeStderr ? WRAPPER_MERGED : WRAPPER, 'debugfs', outFile, errFile, ...args], {
      // TZ=UTC: debugfs formats 4 times per inode with localtime(); without TZ
      // glibc stats /etc/localtime for each. LC_ALL=C: debugfs sets LC_CTYPE
      // and LC_MESSAGES from the environment, which would change which xattr
      // values print as strings and the wording of errors.
      env: { TZ: 'UTC', LC_ALL: 'C' },
      okCodes: [0, 127],
      timeoutMs: opts.timeoutMs,
      allowTimeout: true,
    });
    if (result.exitCode === 127) {
      throw new EnvironmentError('tool missing: debugfs', 'Install it: apt-get install e2fsprogs');
    }
    const raw = await readFile(outFile).catch(() => Buffer.alloc(0));
    let stderr = (await readFile(errFile).catch(() => Buffer.alloc(0))).toString('utf8').replace(BANNER, '');
    let stdoutText = raw.toString('utf8');
    if (opts.mergeStderr) {
      stdoutText = stdoutText.replace(BANNER, '');
      stderr = '';
    }
    if (result.timedOut) throw new ToolError(display, undefined, `timed out after ${opts.timeoutMs} ms\n${stderr}`);
    const openError = /^.*while (trying to open|opening filesystem).*$/m.exec(opts.mergeStderr ? stdoutText : stderr);
    if (openError) {
      throw new ToolError(display, result.exitCode, openError[0], `debugfs cannot open ${image}: is it an ext2/3/4 image?`);
    }
    return { command: display, stdout: stdoutText, stderr, raw, sections: splitDebugfsOutput(raw, commands) };
  });
}

/**
 * Splits the stdout of a `debugfs -f` run at the echo lines of `commands`
 * (found in order, each after the previous one); what comes before the first
 * echo line is dropped. A section's output is decoded as UTF-8. Exact as long
 * as no printed name contains a newline followed by the next echo line; the
 * readers parse `raw` with parseLsPSections()/parseStatSections() instead.
 */
export function splitDebugfsOutput(output: Buffer | string, commands: string[]): DebugfsSection[] {
  const text = toBinary(output);
  const starts: { at: number; body: number }[] = [];
  let from = 0;
  for (const command of commands) {
    const echo = `debugfs: ${Buffer.from(command, 'utf8').toString('latin1')}\n`;
    let at: number;
    if (from === 0 && text.startsWith(echo)) at = 0;
    else {
      at = text.indexOf(`\n${echo}`, Math.max(0, from - 1));
      if (at < 0) break;
      at += 1;
    }
    starts.push({ at, body: at + echo.length });
    from = at + echo.length;
  }
  return commands.map((command, i) => {
    const s = starts[i];
    if (!s) return { command, output: '' };
    const end = starts[i + 1]?.at ?? text.length;
    return { command, output: fromBinary(text.slice(s.body, end)) };
  });
}

// ---------------------------------------------------------------------------
// Writing arguments

/**
 * Quotes one argument for a debugfs command line (libss rules): bare when it
 * has no space, tab or double quote, otherwise in double quotes with every "
 * doubled. Backslashes stay as they are (libss leaves them alone). Refuses
 * newline, CR and NUL, which no quoting can carry. Does not protect a leading
 * "-" from getopt: pass absolute paths.
 */
export function quoteDebugfsArg(s: string): string {
  if (/[\n\r\0]/.test(s)) throw new Error(`debugfs can't take an argument with a newline, CR or NUL: ${JSON.stringify(s)}`);
  if (s !== '' && !/[ \t"]/.test(s)) return s;
  return `"${s.replace(/"/g, '""')}"`;
}

/**
 * An ea_set inline value: every byte as \xHH, which parse_c_string() decodes
 * back to the byte (NUL included); `""` for the empty value. 4 characters per
 * byte: values of more than ~1900 bytes need `ea_set -f FILE` (a line may not
 * exceed DEBUGFS_MAX_LINE).
 */
export function encodeDebugfsValue(value: Buffer): string {
  if (value.length === 0) return '""';
  let s = '';
  for (const b of value) s += `\\x${b.toString(16).padStart(2, '0')}`;
  return s;
}

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

function toBinary(text: string | Buffer): string {
  return typeof text === 'string' ? Buffer.from(text, 'utf8').toString('latin1') : text.toString('latin1');
}

function fromBinary(s: string): string {
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
// Parsing `stats -h` and `ea_get -x`

export interface SuperblockInfo {
  blockSize: number;
  features: string[];
  inodeCount: number;
  blockCount: number;
}

/** The few superblock fields the readers need, from `stats` or `dumpe2fs -h` output. */
export function parseStats(text: string | Buffer): SuperblockInfo {
  const s = typeof text === 'string' ? text : text.toString('utf8');
  const field = (name: string): string | undefined => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(s)?.[1]?.trim();
  const blockSize = Number(field('Block size'));
  if (!Number.isInteger(blockSize) || blockSize <= 0) throw new Error('no "Block size:" in the superblock listing');
  return {
    blockSize,
    features: (field('Filesystem features') ?? '').split(/\s+/).filter(Boolean),
    inodeCount: Number(field('Inode count') ?? 0),
    blockCount: Number(field('Block count') ?? 0),
  };
}

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
