// Compares two manifests into typed deltas. One result, several reporters.
import type { Finding, Manifest, ManifestEntry } from '../types.js';
import { comparePaths } from './entry.js';

export type DeltaCode =
  | 'missing' | 'extra' | 'type' | 'mode' | 'uid' | 'gid' | 'content' | 'size'
  | 'link' | 'rdev' | 'xattr' | 'hardlink' | 'mtime';

export interface Delta {
  code: DeltaCode;
  path: string;
  field?: string;
  expected?: unknown;
  actual?: unknown;
}

export interface DiffOptions {
  /** Compare mtimes too (off by default: images and trees rarely agree). */
  compareMtime?: boolean;
  /** Leave out sha256 comparison (manifests made with --no-hash). */
  ignoreContent?: boolean;
  /** Paths present only on the actual side that are not differences (lost+found). */
  ignoreExtra?: (path: string) => boolean;
}

/** Diff `expected` (the input) against `actual` (the image). */
export function diffManifests(expected: Manifest, actual: Manifest, opts: DiffOptions = {}): Delta[] {
  const deltas: Delta[] = [];
  const a = expected.entries;
  const b = actual.entries;
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const c = i >= a.length ? 1 : j >= b.length ? -1 : comparePaths(a[i].path, b[j].path);
    if (c < 0) {
      deltas.push({ code: 'missing', path: a[i].path, expected: a[i].type });
      i++;
    } else if (c > 0) {
      if (!opts.ignoreExtra?.(b[j].path)) deltas.push({ code: 'extra', path: b[j].path, actual: b[j].type });
      j++;
    } else {
      diffEntry(a[i], b[j], opts, deltas);
      i++;
      j++;
    }
  }
  return deltas;
}

function diffEntry(e: ManifestEntry, a: ManifestEntry, opts: DiffOptions, out: Delta[]): void {
  const path = e.path;
  if (e.type !== a.type) {
    out.push({ code: 'type', path, field: 'type', expected: e.type, actual: a.type });
    return;
  }
  if (e.mode !== a.mode) out.push({ code: 'mode', path, field: 'mode', expected: e.mode, actual: a.mode });
  if (e.uid !== a.uid) out.push({ code: 'uid', path, field: 'uid', expected: e.uid, actual: a.uid });
  if (e.gid !== a.gid) out.push({ code: 'gid', path, field: 'gid', expected: e.gid, actual: a.gid });
  if (e.type === 'file' && !opts.ignoreContent) {
    if (e.size !== a.size) out.push({ code: 'content', path, field: 'size', expected: e.size, actual: a.size });
    else if (e.sha256 !== undefined && a.sha256 !== undefined && e.sha256 !== a.sha256) {
      out.push({ code: 'content', path, field: 'sha256', expected: e.sha256, actual: a.sha256 });
    }
  } else if (e.type === 'file' && e.size !== a.size) {
    out.push({ code: 'size', path, field: 'size', expected: e.size, actual: a.size });
  }
  if (e.type === 'symlink' && e.target !== a.target) {
    out.push({ code: 'link', path, field: 'target', expected: e.target, actual: a.target });
  }
  if ((e.type === 'char' || e.type === 'block') && e.rdev !== a.rdev) {
    out.push({ code: 'rdev', path, field: 'rdev', expected: e.rdev, actual: a.rdev });
  }
  const ex = e.xattrs ?? {};
  const ax = a.xattrs ?? {};
  for (const name of [...new Set([...Object.keys(ex), ...Object.keys(ax)])].sort()) {
    if (ex[name] !== ax[name]) out.push({ code: 'xattr', path, field: name, expected: ex[name], actual: ax[name] });
  }
  if ((e.hardlink ?? null) !== (a.hardlink ?? null) || (e.nlink ?? 1) !== (a.nlink ?? 1)) {
    out.push({
      code: 'hardlink', path, field: 'hardlink',
      expected: e.hardlink ?? `nlink ${e.nlink ?? 1}`, actual: a.hardlink ?? `nlink ${a.nlink ?? 1}`,
    });
  }
  if (opts.compareMtime && e.mtime !== undefined && a.mtime !== undefined && e.mtime !== a.mtime) {
    out.push({ code: 'mtime', path, field: 'mtime', expected: e.mtime, actual: a.mtime });
  }
}

const DESCRIBE: Record<DeltaCode, string> = {
  missing: 'missing from the image',
  extra: 'not in the input',
  type: 'type differs',
  mode: 'mode differs',
  uid: 'owner (uid) differs',
  gid: 'group (gid) differs',
  content: 'content differs',
  size: 'size differs',
  link: 'symlink target differs',
  rdev: 'device number differs',
  xattr: 'xattr differs',
  hardlink: 'hardlink group differs',
  mtime: 'mtime differs',
};

function show(v: unknown): string {
  return v === undefined ? '(none)' : typeof v === 'string' ? v : JSON.stringify(v);
}

export function deltaMessage(d: Delta): string {
  const what = d.code === 'xattr' ? `xattr ${d.field} differs` : DESCRIBE[d.code];
  if (d.code === 'missing' || d.code === 'extra') return `${d.path}: ${what}`;
  return `${d.path}: ${what}: expected ${show(d.expected)}, got ${show(d.actual)}`;
}

export function deltaToFinding(d: Delta): Finding {
  return { code: d.code, message: deltaMessage(d), path: d.path, field: d.field, expected: d.expected, actual: d.actual };
}
