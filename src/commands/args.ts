// The argument parser of every command: strict (an unknown option, a missing
// value, a flag given twice with different values, contradictory flags are
// usage errors, exit 2) and forgiving (each error names the nearest known
// option, command or stage: "did you mean --input?"; a value that starts with
// "-" but is no option is the value, so that `--size-mb -5` is range-checked).
//
// Hand-written rather than commander, yargs, clipanion or citty: none of them
// refuses `--format raw --format qcow2` (the last one silently wins) or takes
// `--size-mb -5` as a value while still refusing `--output --format`, and
// their own error texts would still have to be replaced to name the command's
// --help; the table of options each command already declares is all this needs.
import { UsageError } from '../errors.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  /** May be given more than once; the values are collected in order. */
  multiple?: boolean;
}
export type Options = Record<string, OptionSpec>;
export type Values = Record<string, string | boolean | string[] | undefined>;

/** Options every command takes, before or after its name. */
export const GLOBAL_OPTIONS: Options = {
  help: { type: 'boolean', short: 'h' },
  quiet: { type: 'boolean', short: 'q' },
  verbose: { type: 'boolean', short: 'v' },
};

/** Edit distance with transpositions (optimal string alignment), for "did you mean": `bulid` is 1 from `build`. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The known name closest to `word`: within a third of its length in edits
 * (at least 1, at most 3), or the only one it is a prefix of.
 */
export function closest(word: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(word, k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  if (best !== undefined && bestDistance <= Math.min(3, Math.max(1, Math.floor(word.length / 3)))) return best;
  const prefixed = known.filter((k) => k.startsWith(word));
  return word.length >= 2 && prefixed.length === 1 ? prefixed[0] : undefined;
}

/** " Did you mean X?" or "" (for the end of a message). */
export function didYouMean(word: string, known: readonly string[], show: (k: string) => string = (k) => k): string {
  const k = closest(word, known);
  return k === undefined ? '' : `; did you mean ${show(k)}?`;
}

export interface Parsed {
  values: Values;
  positionals: string[];
}

/**
 * Parses `argv` against `options` (GLOBAL_OPTIONS included by the caller).
 * `where` names the command in messages ("build").
 */
export function parseOptions(where: string, argv: readonly string[], options: Options): Parsed {
  const help = `Run \`part-image ${where} --help\` for the usage.`;
  const byShort = new Map<string, string>();
  for (const [name, o] of Object.entries(options)) if (o.short) byShort.set(o.short, name);
  const longNames = Object.keys(options);
  const isKnownOption = (a: string) => {
    if (a.startsWith('--')) return a.slice(2).split('=')[0] in options;
    return a.length >= 2 && a[0] === '-' && byShort.has(a[1]);
  };
  const values: Values = {};
  const positionals: string[] = [];
  const set = (name: string, value: string | boolean, shown: string) => {
    const o = options[name];
    if (o.multiple) {
      values[name] = [...((values[name] as string[] | undefined) ?? []), value as string];
      return;
    }
    const old = values[name];
    if (old !== undefined && old !== value) {
      throw new UsageError(`${where}: ${shown} given twice with different values: "${String(old)}" and "${String(value)}"`, 'Give it once.');
    }
    values[name] = value;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a === '-' || !a.startsWith('-')) {
      positionals.push(a);
      continue;
    }
    let name: string;
    let inline: string | undefined;
    let shown: string;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      inline = eq < 0 ? undefined : a.slice(eq + 1);
      shown = `--${name}`;
      if (!(name in options)) {
        throw new UsageError(`${where}: unknown option --${name}${didYouMean(name, longNames, (k) => `--${k}`)}`, help);
      }
    } else {
      const first = byShort.get(a[1]);
      if (first === undefined) {
        throw new UsageError(`${where}: unknown option -${a[1]}${/^-\d/.test(a) ? ` (a value that starts with "-" goes right after its option, as in --size-mb ${a})` : ''}`, help);
      }
      if (options[first].type === 'boolean' && a.length > 2) {
        // Bundled short booleans: -qh.
        for (const c of a.slice(1)) {
          const n = byShort.get(c);
          if (n === undefined || options[n].type !== 'boolean') throw new UsageError(`${where}: unknown option -${c} in ${a}`, help);
          set(n, true, `-${c}`);
        }
        continue;
      }
      name = first;
      inline = a.length > 2 ? a.slice(2).replace(/^=/, '') : undefined;
      shown = `-${a[1]}`;
    }
    const o = options[name];
    if (o.type === 'boolean') {
      if (inline !== undefined) throw new UsageError(`${where}: ${shown} takes no value (got "${inline}")`, help);
      set(name, true, shown);
      continue;
    }
    let value = inline;
    if (value === undefined) {
      const next = argv[i + 1];
      if (next === undefined) throw new UsageError(`${where}: ${shown} needs a value`, help);
      if (next === '--' || isKnownOption(next)) throw new UsageError(`${where}: ${shown} needs a value, but the next argument is the option ${next.split('=')[0]}`, help);
      value = next;
      i++;
    }
    set(name, value, shown);
  }
  return { values, positionals };
}

/** Splits the global options off the front of argv (`part-image --verbose doctor`). */
export function leadingGlobals(argv: readonly string[]): { globals: string[]; rest: string[] } {
  const globals: string[] = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('-') || a === '-' || a === '--') break;
    globals.push(a);
  }
  return { globals, rest: argv.slice(i) };
}

/**
 * Flags that contradict each other, given together: exit 2. `same` pairs
 * are allowed when they agree (`--json --format json`).
 */
export function refuseContradictions(where: string, v: Values, pairs: readonly (readonly [string, string, ((v: Values) => boolean)?])[]): void {
  for (const [a, b, agree] of pairs) {
    if (v[a] !== undefined && v[b] !== undefined && !(agree?.(v) ?? false)) {
      const show = (k: string) => (typeof v[k] === 'string' ? `--${k} ${String(v[k])}` : `--${k}`);
      throw new UsageError(`${where}: ${show(a)} and ${show(b)} contradict each other`, 'Give one of them.');
    }
  }
}
