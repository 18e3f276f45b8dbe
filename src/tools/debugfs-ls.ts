// Parses `ls -p` as debugfs 1.47.0 prints it, one or many listings of a
// `debugfs -f` run. Tested on captured real output (test/fixtures/debugfs/).
import { fromBinary, toBinary } from './debugfs-text.js';

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
