// Compares two manifests into typed deltas. One result, several reporters.
// What each field compares and which delta it gives is its row in fields.ts.
import type { Finding, Manifest, ManifestEntry } from '../types.js';
import { comparePaths } from './entry.js';
import { appliesTo, deltaKind, FIELDS, type Delta, type DiffOptions } from './fields.js';

export type { Delta, DeltaCode, DiffOptions } from './fields.js';

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

/** The fields in table order; the first decisive field that differs (type) ends the entry. */
function diffEntry(e: ManifestEntry, a: ManifestEntry, opts: DiffOptions, out: Delta[]): void {
  for (const f of FIELDS) {
    if (!f.compare || !appliesTo(f, e.type)) continue;
    const found = f.compare(e, a, opts);
    for (const d of found) out.push({ code: d.code, path: e.path, field: d.field, expected: d.expected, actual: d.actual });
    if (f.decisive && found.length > 0) return;
  }
}

function show(v: unknown): string {
  return v === undefined ? '(none)' : typeof v === 'string' ? v : JSON.stringify(v);
}

export function deltaMessage(d: Delta): string {
  const what = deltaKind(d.code).message(d.field);
  if (d.code === 'missing' || d.code === 'extra') return `${d.path}: ${what}`;
  return `${d.path}: ${what}: expected ${show(d.expected)}, got ${show(d.actual)}`;
}

export function deltaToFinding(d: Delta): Finding {
  return { code: d.code, message: deltaMessage(d), path: d.path, field: d.field, expected: d.expected, actual: d.actual };
}
