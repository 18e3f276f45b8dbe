// Allow files (--golden-allow): the differences from a golden manifest that
// are expected, each with its reason. A rule that matches nothing is stale and
// is reported as a failing finding, so that allow files do not rot into a
// list of blanket exceptions; a rule marked `optional` (host-dependent
// content) is exempt from that.
import { readFile } from 'node:fs/promises';
import type { Delta, DeltaCode } from '../manifest/diff.js';
import { schemaCheck } from '../schema.js';

export const ALLOW_FORMAT = 'part-image-golden-allow/1';

export interface AllowRule {
  /** Glob on the manifest path (see globToRegExp). */
  path: string;
  code?: DeltaCode;
  field?: string;
  reason: string;
  optional?: boolean;
}

export interface AllowFile {
  format: typeof ALLOW_FORMAT;
  allow: AllowRule[];
}

/**
 * A glob on manifest paths: `*` and `?` never cross a "/", `**` does (and
 * `/**\/` also matches a single "/"), `[...]` is a character class. Anything
 * else is literal.
 */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') {
      if (glob[i + 1] === '*') {
        i++;
        if (glob[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else re += '.*';
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        let body = glob.slice(i + 1, end).replace(/\\/g, '\\\\');
        if (body.startsWith('!')) body = `^${body.slice(1)}`;
        re += `[${body}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export type AllowRead = { ok: true; rules: AllowRule[] } | { ok: false; message: string };

export function parseAllowText(text: string, path: string): AllowRead {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    return { ok: false, message: `allow file ${path} is not JSON: ${(err as Error).message}` };
  }
  const problems = schemaCheck('golden-allow')(data);
  if (problems.length) {
    return { ok: false, message: `allow file ${path} does not match schema/golden-allow.schema.json:\n${problems.join('\n')}` };
  }
  return { ok: true, rules: (data as AllowFile).allow };
}

export async function readAllowFile(path: string): Promise<AllowRead> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    return { ok: false, message: `cannot read allow file ${path}: ${(err as Error).message}` };
  }
  return parseAllowText(text, path);
}

export function ruleMatches(rule: AllowRule, d: Delta, re = globToRegExp(rule.path)): boolean {
  if (rule.code !== undefined && rule.code !== d.code) return false;
  if (rule.field !== undefined && rule.field !== d.field) return false;
  return re.test(d.path);
}

export interface AllowOutcome {
  /** Differences no rule allows. */
  kept: Delta[];
  /** Differences a rule allows, with the rule's index. */
  allowed: { delta: Delta; rule: number }[];
  /** Indexes of non-optional rules that matched nothing. */
  stale: number[];
}

/** Sorts deltas into allowed and kept; the first matching rule wins. */
export function applyAllowRules(deltas: readonly Delta[], rules: readonly AllowRule[]): AllowOutcome {
  const res = rules.map((r) => globToRegExp(r.path));
  const used = new Set<number>();
  const kept: Delta[] = [];
  const allowed: AllowOutcome['allowed'] = [];
  for (const d of deltas) {
    const i = rules.findIndex((r, k) => ruleMatches(r, d, res[k]));
    if (i < 0) kept.push(d);
    else {
      used.add(i);
      allowed.push({ delta: d, rule: i });
    }
  }
  const stale = rules.map((_, i) => i).filter((i) => !used.has(i) && !rules[i].optional);
  return { kept, allowed, stale };
}

export function describeRule(rule: AllowRule, index: number): string {
  const what = [rule.code && `code ${rule.code}`, rule.field && `field ${rule.field}`].filter(Boolean).join(', ');
  return `rule #${index + 1} (${rule.path}${what ? `, ${what}` : ''})`;
}
