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
//   files), xattr.NAME=BASE64 (go-mtree's keyword, see below), in the
//   order of MTREE_KEYWORDS; each keyword's words come from its field's row
//   in fields.ts;
// - names, link targets and xattr names are vis(3)-encoded (vis.ts) as go-mtree does
//   (VIS_WHITE|VIS_OCTAL|VIS_GLOB, with "\" and "=" in octal too, as
//   libarchive writes them): every byte that is not a
//   printable ASCII character, plus space, "\", "#", "*", "?", "[" and "=",
//   becomes a 3-digit octal escape (\040 for a space). NetBSD's strunvis,
//   libarchive and go-mtree's unvis all decode octal; glob characters must be
//   escaped or NetBSD mtree takes the name for a pattern.
// - xattrs: go-mtree writes `xattr.<vis(name)>=<base64(value)>`. NetBSD mtree
//   and libarchive reject that keyword ("unknown keyword"), so `xattrs: false`
//   leaves it out for them.
import type { Manifest, ManifestEntry } from '../types.js';
import { appliesTo, FIELDS, type Field, type MtreeOptions } from './fields.js';
import { visEncode } from './vis.js';

export type { MtreeOptions } from './fields.js';

/**
 * The keywords written, in line order (go-mtree's keyword set). Each comes
 * from the field row that names it in FIELDS.
 */
export const MTREE_KEYWORDS = ['type', 'mode', 'uid', 'gid', 'size', 'sha256digest', 'nlink', 'link', 'device', 'xattr'] as const;

const byKeyword = new Map<string, Field>(FIELDS.flatMap((f) => (f.mtree ? [[f.mtree.keyword, f] as const] : [])));

function selectedKeywords(o: MtreeOptions): readonly string[] {
  return MTREE_KEYWORDS.filter((k) => !(k === 'sha256digest' && o.hash === false) && !(k === 'xattr' && o.xattrs === false));
}

/** The mtree name of a manifest path: "/" is ".", "/usr/bin" is "./usr/bin". */
export function mtreeName(path: string): string {
  return path === '/' ? '.' : `.${visEncode(path)}`;
}

export function mtreeLine(e: ManifestEntry, o: MtreeOptions = {}): string {
  const words: string[] = [];
  for (const keyword of selectedKeywords(o)) {
    const f = byKeyword.get(keyword);
    if (!f?.mtree) throw new Error(`no manifest field has the mtree keyword ${keyword}`);
    if (appliesTo(f, e.type)) words.push(...f.mtree.words(e));
  }
  return `${mtreeName(e.path)} ${words.join(' ')}`;
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
