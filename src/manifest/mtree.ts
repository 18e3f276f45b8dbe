// A manifest as an mtree(5) specification that BSD and Go tools read:
// NetBSD `mtree -f SPEC -p DIR` checks a tree against it, libarchive
// (`bsdtar -tvf SPEC`, `bsdtar -cf OUT.tar @SPEC`) reads it as an archive,
// go-mtree validates with it.
//
// Format, chosen to be the common subset of those readers:
// - "#mtree" on the first line (libarchive's signature), then one line per
//   entry in manifest order, each with its full path ("./usr/bin/ping"),
//   no /set defaults and no ".." lines, so that every line stands alone and
//   the file diffs like the JSON manifest;
// - keywords: type, mode, uid, gid, then size and sha256digest (files),
//   link (symlinks), device=native,MAJOR,MINOR (devices), nlink (hardlinked
//   files), xattr.NAME=BASE64 (go-mtree's keyword, see below);
// - names, link targets and xattr names are vis(3)-encoded as go-mtree does
//   (VIS_WHITE|VIS_OCTAL|VIS_GLOB, with "\" and "=" in octal too, as
//   libarchive writes them): every byte that is not a
//   printable ASCII character, plus space, "\", "#", "*", "?", "[" and "=",
//   becomes a 3-digit octal escape (\040 for a space). NetBSD's strunvis,
//   libarchive and go-mtree's unvis all decode octal; glob characters must be
//   escaped or NetBSD mtree takes the name for a pattern.
// - xattrs: go-mtree writes `xattr.<vis(name)>=<base64(value)>`. NetBSD mtree
//   and libarchive reject that keyword ("unknown keyword"), so `xattrs: false`
//   leaves it out for them.
import type { EntryType, Manifest, ManifestEntry } from '../types.js';

export interface MtreeOptions {
  /** sha256digest of files (default true). */
  hash?: boolean;
  /** go-mtree's xattr.* keywords (default true); off for NetBSD mtree and bsdtar. */
  xattrs?: boolean;
}

const MTREE_TYPE: Record<EntryType, string> = {
  file: 'file', dir: 'dir', symlink: 'link', char: 'char', block: 'block', fifo: 'fifo', socket: 'socket',
};

const NEEDS_ESCAPE = new Set([...' \\#*?[='].map((c) => c.charCodeAt(0)));

/** vis(3) with VIS_WHITE|VIS_OCTAL|VIS_GLOB, byte-wise on the UTF-8 bytes (as go-mtree's govis). */
export function visEncode(s: string | Buffer): string {
  const bytes = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  let out = '';
  for (const b of bytes) {
    if (b > 0x20 && b < 0x7f && !NEEDS_ESCAPE.has(b)) out += String.fromCharCode(b);
    else out += `\\${b.toString(8).padStart(3, '0')}`;
  }
  return out;
}

/** strunvis for the escapes visEncode writes (and the C-style ones NetBSD mtree -c writes). */
export function visDecode(s: string): Buffer {
  const out: number[] = [];
  const cstyle: Record<string, number> = { s: 0x20, t: 0x09, n: 0x0a, r: 0x0d, b: 0x08, a: 0x07, v: 0x0b, f: 0x0c, '\\': 0x5c, '#': 0x23 };
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c !== '\\') {
      out.push(...Buffer.from(c, 'utf8'));
      continue;
    }
    const oct = /^[0-7]{3}/.exec(s.slice(i + 1));
    if (oct) {
      out.push(parseInt(oct[0], 8));
      i += 3;
    } else if (s[i + 1] in cstyle) {
      out.push(cstyle[s[i + 1]]);
      i += 1;
    } else throw new Error(`unsupported vis escape at ${i} in ${s}`);
  }
  return Buffer.from(out);
}

/** The mtree name of a manifest path: "/" is ".", "/usr/bin" is "./usr/bin". */
export function mtreeName(path: string): string {
  return path === '/' ? '.' : `.${visEncode(path)}`;
}

export function mtreeLine(e: ManifestEntry, o: MtreeOptions = {}): string {
  const kw: string[] = [`type=${MTREE_TYPE[e.type]}`, `mode=${e.mode}`, `uid=${e.uid}`, `gid=${e.gid}`];
  if (e.type === 'file') {
    if (e.size !== undefined) kw.push(`size=${e.size}`);
    if ((o.hash ?? true) && e.sha256) kw.push(`sha256digest=${e.sha256}`);
    if (e.nlink && e.nlink > 1) kw.push(`nlink=${e.nlink}`);
  }
  if (e.type === 'symlink') kw.push(`link=${visEncode(e.target ?? '')}`);
  if ((e.type === 'char' || e.type === 'block') && e.rdev) kw.push(`device=native,${e.rdev}`);
  if (o.xattrs ?? true) {
    for (const [name, hex] of Object.entries(e.xattrs ?? {}).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))) {
      kw.push(`xattr.${visEncode(name)}=${Buffer.from(hex, 'hex').toString('base64')}`);
    }
  }
  return `${mtreeName(e.path)} ${kw.join(' ')}`;
}

/**
 * The whole specification. Sockets are left out: no mtree reader can create
 * one and the builder does not carry them either.
 */
export function toMtree(manifest: Manifest, o: MtreeOptions = {}): string {
  const lines = ['#mtree'];
  for (const e of manifest.entries) if (e.type !== 'socket') lines.push(mtreeLine(e, o));
  return `${lines.join('\n')}\n`;
}
