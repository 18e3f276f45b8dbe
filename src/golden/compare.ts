// An image manifest against a golden manifest, with the allow rules applied.
import type { Finding, Manifest } from '../types.js';
import { diffManifests, type Delta } from '../manifest/diff.js';
import { showValue } from '../manifest/diff-format.js';
import { applyAllowRules, describeRule, type AllowOutcome, type AllowRule } from './allow.js';

export interface GoldenCompareOptions {
  /** Compare mtimes too (only where the golden file keeps them). */
  compareMtime?: boolean;
  rules?: readonly AllowRule[];
}

export interface GoldenComparison extends AllowOutcome {
  /** Every difference, allowed or not. */
  deltas: Delta[];
}

export function compareWithGolden(golden: Manifest, image: Manifest, opts: GoldenCompareOptions = {}): GoldenComparison {
  // A golden file made with --no-hash has no sha256: sizes are still compared.
  const deltas = diffManifests(golden, image, { compareMtime: opts.compareMtime });
  return { deltas, ...applyAllowRules(deltas, opts.rules ?? []) };
}

function what(d: Delta): string {
  switch (d.code) {
    case 'xattr': return `xattr ${d.field}`;
    case 'content': return `content (${d.field})`;
    case 'link': return 'symlink target';
    default: return d.field ?? d.code;
  }
}

export function goldenMessage(d: Delta): string {
  if (d.code === 'missing') return `${d.path}: in the golden manifest (${d.expected}), not in the image`;
  if (d.code === 'extra') return `${d.path}: in the image (${d.actual}), not in the golden manifest`;
  return `${d.path}: ${what(d)} differs from the golden manifest: golden ${showValue(d, d.expected)}, image ${showValue(d, d.actual)}`;
}

/** A mismatch finding: the delta code, with the full values in expected/actual. */
export function goldenFinding(d: Delta): Finding {
  return { code: d.code, message: goldenMessage(d), path: d.path, field: d.field, expected: d.expected, actual: d.actual };
}

export function staleRuleFinding(rule: AllowRule, index: number, file: string): Finding {
  return {
    code: 'golden-allow-stale',
    message: `${describeRule(rule, index)} in ${file} matched no difference: delete it, or mark it "optional" if the difference shows on some hosts only (its reason: ${rule.reason})`,
    path: rule.path,
    ...(rule.field !== undefined ? { field: rule.field } : {}),
  };
}
