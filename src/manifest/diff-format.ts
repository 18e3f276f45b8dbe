// Reporters for one diff result: text for people (grouped by path, like a
// `git diff --stat` that also names the fields) and JSON for programs.
import { deltaKind, fieldByKey, type Delta, type DeltaCode } from './fields.js';

export interface DiffSide {
  /** What the user named: a path, or "golden"/"image". */
  name: string;
  kind?: string;
  entries?: number;
}

/** How a side is called in the text: "A"/"B", or "golden"/"image". */
export interface DiffLabels {
  a: string;
  b: string;
}

/** A value as a person wants to read it: hashes cut, xattr text shown as text, long hex cut with its length. */
export function showValue(d: Delta, v: unknown): string {
  if (v === undefined || v === null) return '(none)';
  if (typeof v !== 'string') return String(v);
  const show = fieldByKey(d.field)?.show ?? deltaKind(d.code).show;
  return show ? show(v) : v;
}

function fieldLabel(d: Delta): string {
  return deltaKind(d.code).label(d.field);
}

interface PathGroup {
  path: string;
  deltas: Delta[];
}

function groupByPath(deltas: readonly Delta[]): PathGroup[] {
  const groups: PathGroup[] = [];
  const byPath = new Map<string, PathGroup>();
  for (const d of deltas) {
    let g = byPath.get(d.path);
    if (!g) {
      g = { path: d.path, deltas: [] };
      byPath.set(d.path, g);
      groups.push(g);
    }
    g.deltas.push(d);
  }
  return groups;
}

/** "3 paths differ: 1 only in A, 1 only in B, 1 changed (mode 1, xattr 2)". */
export function diffSummary(deltas: readonly Delta[], labels: DiffLabels = { a: 'A', b: 'B' }): string {
  const groups = groupByPath(deltas);
  if (groups.length === 0) return 'no differences';
  const onlyA = groups.filter((g) => g.deltas[0].code === 'missing').length;
  const onlyB = groups.filter((g) => g.deltas[0].code === 'extra').length;
  const changed = groups.length - onlyA - onlyB;
  const counts = new Map<DeltaCode, number>();
  for (const d of deltas) if (d.code !== 'missing' && d.code !== 'extra') counts.set(d.code, (counts.get(d.code) ?? 0) + 1);
  const parts: string[] = [];
  if (onlyA) parts.push(`${onlyA} only in ${labels.a}`);
  if (onlyB) parts.push(`${onlyB} only in ${labels.b}`);
  if (changed) parts.push(`${changed} changed (${[...counts].map(([c, n]) => `${c} ${n}`).join(', ')})`);
  return `${groups.length} path${groups.length === 1 ? '' : 's'} differ${groups.length === 1 ? 's' : ''}: ${parts.join(', ')}`;
}

/**
 * One block per path, in path order:
 *   - /usr/bin/old       file, only in A
 *   + /usr/bin/new       file, only in B
 *   ~ /usr/bin/ping
 *         mode                       0755 -> 0700
 *         xattr security.capability  01000002… (20 bytes) -> (none)
 * then the summary line.
 */
export function formatDiffText(deltas: readonly Delta[], labels: DiffLabels = { a: 'A', b: 'B' }): string {
  const groups = groupByPath(deltas);
  const lines: string[] = [];
  const onlyOneSide = groups.filter((g) => g.deltas[0].code === 'missing' || g.deltas[0].code === 'extra');
  const pathWidth = Math.min(48, Math.max(0, ...onlyOneSide.map((g) => g.path.length)));
  for (const g of groups) {
    const first = g.deltas[0];
    if (first.code === 'missing') {
      lines.push(`- ${g.path.padEnd(pathWidth)}  ${first.expected ?? ''}, only in ${labels.a}`.trimEnd());
      continue;
    }
    if (first.code === 'extra') {
      lines.push(`+ ${g.path.padEnd(pathWidth)}  ${first.actual ?? ''}, only in ${labels.b}`.trimEnd());
      continue;
    }
    lines.push(`~ ${g.path}`);
    const width = Math.max(...g.deltas.map((d) => fieldLabel(d).length));
    for (const d of g.deltas) lines.push(`      ${fieldLabel(d).padEnd(width)}  ${showValue(d, d.expected)} -> ${showValue(d, d.actual)}`);
  }
  lines.push('', diffSummary(deltas, labels));
  return `${lines.join('\n')}\n`;
}

export interface DiffJson {
  same: boolean;
  a: DiffSide;
  b: DiffSide;
  summary: { paths: number; onlyA: number; onlyB: number; changed: number; byCode: Record<string, number> };
  differences: Delta[];
}

export function diffToJson(deltas: readonly Delta[], a: DiffSide, b: DiffSide): DiffJson {
  const groups = groupByPath(deltas);
  const byCode: Record<string, number> = {};
  for (const d of deltas) byCode[d.code] = (byCode[d.code] ?? 0) + 1;
  const onlyA = groups.filter((g) => g.deltas[0].code === 'missing').length;
  const onlyB = groups.filter((g) => g.deltas[0].code === 'extra').length;
  return {
    same: deltas.length === 0,
    a,
    b,
    summary: { paths: groups.length, onlyA, onlyB, changed: groups.length - onlyA - onlyB, byCode },
    differences: [...deltas],
  };
}
