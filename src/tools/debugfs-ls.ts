// Parses `ls -p` as debugfs 1.47.0 prints it in its command loop, one or many
// listings, each after its prompt (tools/debugfs.ts DebugfsSession). Tested
// on captured real output (test/fixtures/debugfs/).
import { DEBUGFS_PROMPT, fromBinary, toBinary } from './debugfs-text.js';

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
  entries: LsEntry[];
  /** Lines that are not records (errors). */
  errors: string[];
}

// /INODE/MODE/UID/GID/NAME/SIZE/ or /INODE/MODE/UID/GID/NAME// for a directory.
// A name can't contain "/", but it can contain a newline: [^/]* spans lines.
const LS_RECORD = /\/(\d+)\/([0-7]+)\/(-?\d+)\/(-?\d+)\/([^/]*)\/(\d*)\/\n/y;
const ANY_LINE = /([^\n]*)(?:\n|$)/y;

/**
 * Parses the output of one or more `ls -p` commands, a section for each
 * prompt, in order (what comes before the first prompt, if anything, is a
 * section of its own). "." and "..", and empty slots (inode 0), are left
 * out. uid and gid are returned unsigned. A name cannot forge a record (it
 * cannot hold "/") nor a prompt (a record is read whole, newlines and all).
 */
export function parseLsPSections(text: string | Buffer): LsSection[] {
  const s = toBinary(text);
  const sections: LsSection[] = [];
  let current: LsSection | undefined;
  const begin = (): LsSection => {
    const c: LsSection = { entries: [], errors: [] };
    sections.push(c);
    return c;
  };
  let pos = 0;
  while (pos < s.length) {
    if (s.startsWith(DEBUGFS_PROMPT, pos)) {
      pos += DEBUGFS_PROMPT.length;
      current = begin();
      continue;
    }
    LS_RECORD.lastIndex = pos;
    const rec = LS_RECORD.exec(s);
    if (rec) {
      pos = LS_RECORD.lastIndex;
      current ??= begin();
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
    ANY_LINE.lastIndex = pos;
    const line = ANY_LINE.exec(s)!;
    pos = ANY_LINE.lastIndex;
    if (line[1] !== '') (current ??= begin()).errors.push(fromBinary(line[1]));
  }
  return sections;
}

/** The entries of one `ls -p` listing (all listings concatenated when there are several). */
export function parseLsP(text: string | Buffer): LsEntry[] {
  return parseLsPSections(text).flatMap((s) => s.entries);
}
