// A manifest as an mtree(5) specification that the three real readers take:
// go-mtree 0.4.4 (Debian 12's library) checks a tree with it, NetBSD
// `mtree -f SPEC -p DIR` checks a tree with it, and libarchive
// (`bsdtar -tvf SPEC`, `bsdtar -cf OUT.tar @SPEC`) reads it as an archive.
// test/mtree-readers-image.test.ts runs all three against a loop mount.
//
// Format, the form go-mtree and NetBSD mtree write themselves:
// - "#mtree" on the first line (libarchive's signature);
// - hierarchical, with relative names: "." for the root, then each folder's
//   entries (files first, then each subfolder followed by its own entries
//   and a ".." line), indented four spaces a level for people only. Full
//   paths ("./usr/bin/ping") are not used: go-mtree before 0.5.4 misparses
//   them. No /set lines, so that each entry's line carries all its values
//   and diffs like the JSON manifest;
// - keywords in the order of MTREE_KEYWORDS, each entry's words from its
//   field's row in fields.ts. By default only those every reader knows
//   (MTREE_DEFAULT_KEYWORDS); `device` (go-mtree 0.4.4 stops on it: "Unknown
//   keyword") and go-mtree's `xattr.NAME=BASE64` (NetBSD mtree stops on it,
//   bsdtar warns and exits 1) are chosen with a keyword list, as mtree's own
//   -k/-K do (mtreeKeywords);
// - modes as the readers write them, C's %#o: 04755, 0644, 0 (go-mtree
//   compares them as strings);
// - names, link targets and xattr names vis(3)-encoded (vis.ts) as go-mtree
//   does (VIS_WHITE|VIS_OCTAL|VIS_GLOB, with "\" and "=" in octal too, as
//   libarchive writes them): every byte that is not a printable ASCII
//   character, plus space, "\", "#", "*", "?", "[" and "=", becomes a 3-digit
//   octal escape (\040 for a space). NetBSD's strunvis, libarchive and
//   go-mtree's unvis all decode octal; glob characters must be escaped or
//   NetBSD mtree takes the name for a pattern.
import type { Manifest, ManifestEntry } from '../types.js';
import { UsageError } from '../errors.js';
import { appliesTo, FIELDS, type Field, type MtreeOptions } from './fields.js';
import { visEncode } from './vis.js';

export type { MtreeOptions } from './fields.js';

/** Every keyword part-image can write, in line order. Each comes from the field row that names it in FIELDS. */
export const MTREE_KEYWORDS = ['type', 'mode', 'uid', 'gid', 'size', 'sha256digest', 'nlink', 'link', 'device', 'xattr'] as const;
export type MtreeKeyword = (typeof MTREE_KEYWORDS)[number];

/** The keywords written by default: those go-mtree 0.4.4, NetBSD mtree and bsdtar all read. */
export const MTREE_DEFAULT_KEYWORDS: readonly MtreeKeyword[] = ['type', 'mode', 'uid', 'gid', 'size', 'sha256digest', 'nlink', 'link'];

const byKeyword = new Map<string, Field>(FIELDS.flatMap((f) => (f.mtree ? [[f.mtree.keyword, f] as const] : [])));

function isKeyword(k: string): k is MtreeKeyword {
  return (MTREE_KEYWORDS as readonly string[]).includes(k);
}

/**
 * The keyword set from mtree-style lists: `only` (-k) replaces the default
 * set, `add` (-K) adds to it; `type` is always written (no reader can place
 * an entry without it). Unknown names are a UsageError naming the known ones.
 */
export function mtreeKeywords(o: { only?: readonly string[]; add?: readonly string[] } = {}): MtreeKeyword[] {
  for (const k of [...(o.only ?? []), ...(o.add ?? [])]) {
    if (!isKeyword(k)) throw new UsageError(`unknown mtree keyword "${k}"`, `Keywords: ${MTREE_KEYWORDS.join(', ')}.`);
  }
  const chosen = new Set<string>(['type', ...(o.only ?? MTREE_DEFAULT_KEYWORDS), ...(o.add ?? [])]);
  return MTREE_KEYWORDS.filter((k) => chosen.has(k));
}

function selectedKeywords(o: MtreeOptions): readonly string[] {
  return (o.keywords ?? MTREE_DEFAULT_KEYWORDS).filter((k) => !(k === 'sha256digest' && o.hash === false));
}

/** The mtree name of a manifest path as a full path: "/" is ".", "/usr/bin" is "./usr/bin" (for messages). */
export function mtreeName(path: string): string {
  return path === '/' ? '.' : `.${visEncode(path)}`;
}

/** An entry's keyword words ("type=file mode=0644 ..."), as chosen by `o`. */
export function mtreeWords(e: ManifestEntry, o: MtreeOptions = {}): string {
  const words: string[] = [];
  for (const keyword of selectedKeywords(o)) {
    const f = byKeyword.get(keyword);
    if (!f?.mtree) throw new Error(`no manifest field has the mtree keyword ${keyword}`);
    if (appliesTo(f, e.type)) words.push(...f.mtree.words(e));
  }
  return words.join(' ');
}

/** One entry as a stand-alone full-path line (NetBSD mtree and bsdtar read those; go-mtree 0.4.4 does not). */
export function mtreeLine(e: ManifestEntry, o: MtreeOptions = {}): string {
  return `${mtreeName(e.path)} ${mtreeWords(e, o)}`;
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

/**
 * The whole specification, hierarchical (see the top of this file). Sockets
 * are left out: no mtree reader can create one and the builder does not carry
 * them either. Every entry's folder must be in the manifest, as every reader's
 * manifest has it.
 */
export function toMtree(manifest: Manifest, o: MtreeOptions = {}): string {
  const children = new Map<string, ManifestEntry[]>();
  let root: ManifestEntry | undefined;
  for (const e of manifest.entries) {
    if (e.type === 'socket') continue;
    if (e.path === '/') {
      root = e;
      continue;
    }
    const parent = parentOf(e.path);
    let list = children.get(parent);
    if (!list) children.set(parent, (list = []));
    list.push(e);
  }
  if (!root || root.type !== 'dir') throw new Error('an mtree specification needs the root folder "/" in the manifest');
  const dirs = new Set<string>(['/', ...manifest.entries.filter((e) => e.type === 'dir').map((e) => e.path)]);
  for (const parent of children.keys()) {
    if (!dirs.has(parent)) throw new Error(`an mtree specification needs every folder in the manifest: ${parent} is missing`);
  }
  const lines = ['#mtree', `. ${mtreeWords(root, o)}`];
  // Iterative, so that a deep tree does not overflow the stack.
  const stack: { entries: ManifestEntry[]; i: number; depth: number }[] = [];
  const open = (path: string, depth: number) => {
    const list = children.get(path) ?? [];
    // Files first, then folders, as go-mtree and NetBSD mtree write it; each group in name (byte) order, as the manifest is.
    const entries = [...list.filter((e) => e.type !== 'dir'), ...list.filter((e) => e.type === 'dir')];
    stack.push({ entries, i: 0, depth });
  };
  open('/', 1);
  while (stack.length) {
    const top = stack[stack.length - 1];
    if (top.i === top.entries.length) {
      stack.pop();
      if (stack.length) lines.push(`${'    '.repeat(top.depth - 1)}..`);
      continue;
    }
    const e = top.entries[top.i++];
    lines.push(`${'    '.repeat(top.depth)}${visEncode(baseName(e.path))} ${mtreeWords(e, o)}`);
    if (e.type === 'dir') open(e.path, top.depth + 1);
  }
  return `${lines.join('\n')}\n`;
}
