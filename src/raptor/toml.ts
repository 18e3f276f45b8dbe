// Raptor.toml, read as Raptor's `make` reads it (src/make/parser.rs: serde
// structs Make, Raptor, RunTarget, GroupTarget): [raptor.link] NAME = "path"
// (a string; Raptor's string_or_struct refuses a table), [run.X] with
// `target` (required), `cache`, `input`, `output` (a string or a list),
// `entrypoint` and `args` (lists), `state-dir` (kebab-case, as serde renames
// it), `env` (string values only: Raptor's BTreeMap<String, String> refuses
// a number), and [group.X] with `run` and `build` (lists; Raptor keeps them
// in BTreeSets, so sorted and without duplicates). Unknown keys are ignored,
// as serde does without deny_unknown_fields. Runs and groups come out sorted
// by name, as Raptor's BTreeMaps hold them.
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { InputError } from '../errors.js';

export interface RaptorRun {
  name: string;
  /** The builder, a Raptor module name, e.g. "$rbuild.part-image". */
  target: string;
  cache: string[];
  /** As written: Raptor module names (part-image also reads paths). */
  inputs: string[];
  outputs: string[];
  entrypoint: string[];
  args: string[];
  stateDir?: string;
  env: Record<string, string>;
}

export interface RaptorGroup {
  name: string;
  /** Names of [run.X] entries, sorted, without duplicates. */
  run: string[];
  /** Raptor targets to build (layers only: no part-image run), sorted. */
  build: string[];
}

export interface RaptorConfig {
  /** Absolute path of the Raptor.toml. */
  file: string;
  /** Its folder: Raptor resolves module names (targets, inputs) against it. */
  dir: string;
  links: Record<string, string>;
  /** Sorted by name, as Raptor's BTreeMap. */
  runs: Map<string, RaptorRun>;
  groups: Map<string, RaptorGroup>;
}

const SHAPE_HINT =
  'Raptor.toml has [raptor.link] NAME = "path", [run.NAME] with target = "$LINK.part-image", input, output ' +
  'and env.OUTPUT_FORMAT / env.FREE_MB / env.USED_MB / env.SIZE_MB (strings), and [group.NAME] with run = ["RUN", ...] ' +
  'and build = ["TARGET", ...] (see docs/raptor.md; Raptor reads the same file).';

type Table = Record<string, unknown>;

function isTable(v: unknown): v is Table {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function table(v: unknown, where: string, file: string): Table {
  if (v === undefined) return {};
  if (!isTable(v)) throw new InputError(`${file}: ${where} must be a table`, SHAPE_HINT);
  return v;
}

/** Raptor's string_or_list: a string, or a list of strings. */
function stringOrList(v: unknown, where: string, file: string): string[] {
  if (v === undefined) return [];
  return stringList(Array.isArray(v) ? v : [v], where, file, 'a string or a list of strings');
}

/** A Vec<String> field: a list (a lone string is refused, as serde refuses it). */
function stringList(v: unknown, where: string, file: string, what = 'a list of strings'): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((item) => typeof item !== 'string')) {
    throw new InputError(`${file}: ${where} must be ${what}, got ${JSON.stringify(v)}`, SHAPE_HINT);
  }
  return v as string[];
}

/** A BTreeSet<String>: a list, sorted and deduplicated as Raptor holds it. */
const stringSet = (v: unknown, where: string, file: string): string[] =>
  [...new Set(stringList(v, where, file))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

function envTable(v: unknown, where: string, file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, value] of Object.entries(table(v, where, file))) {
    if (typeof value === 'string') {
      out[k] = value;
      continue;
    }
    const fix = typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean' ? `${k} = "${String(value)}"` : `${k} = "..."`;
    throw new InputError(`${file}: ${where}.${k} must be a string, got ${JSON.stringify(typeof value === 'bigint' ? String(value) : value)}: ` +
      'Raptor refuses any other value (its env is a map of strings)', `Quote it: ${where.replace(/ env$/, '')} env.${fix}`);
  }
  return out;
}

const byName = <T>(m: [string, T][]): Map<string, T> => new Map(m.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

/** Parses the text of a Raptor.toml. Pure: `file` only names it in messages and anchors relative paths. */
export function parseRaptorToml(text: string, file: string): RaptorConfig {
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (err) {
    const msg = err instanceof TomlError ? err.message.split('\n')[0] : (err as Error).message;
    throw new InputError(`${file} is not valid TOML: ${msg}`, 'Fix the syntax; `part-image make -n` checks the file without building.', err);
  }
  const raptor = table(doc.raptor, '[raptor]', file);
  const links: Record<string, string> = {};
  for (const [k, v] of Object.entries(table(raptor.link, '[raptor.link]', file))) {
    if (typeof v !== 'string') throw new InputError(`${file}: [raptor.link] ${k} must be a path string`, SHAPE_HINT);
    links[k] = v;
  }
  const runs: [string, RaptorRun][] = [];
  for (const [name, v] of Object.entries(table(doc.run, '[run]', file))) {
    const where = `[run.${name}]`;
    const t = table(v, where, file);
    if (typeof t.target !== 'string') {
      throw new InputError(`${file}: ${where} has no target`, 'Give it target = "$rbuild.part-image", with rbuild a key of [raptor.link].');
    }
    if (t['state-dir'] !== undefined && typeof t['state-dir'] !== 'string') throw new InputError(`${file}: ${where} state-dir must be a string`, SHAPE_HINT);
    runs.push([name, {
      name,
      target: t.target,
      cache: stringOrList(t.cache, `${where} cache`, file),
      inputs: stringOrList(t.input, `${where} input`, file),
      outputs: stringOrList(t.output, `${where} output`, file),
      entrypoint: stringList(t.entrypoint, `${where} entrypoint`, file),
      args: stringList(t.args, `${where} args`, file),
      stateDir: t['state-dir'] as string | undefined,
      env: envTable(t.env, `${where} env`, file),
    }]);
  }
  const groups: [string, RaptorGroup][] = [];
  for (const [name, v] of Object.entries(table(doc.group, '[group]', file))) {
    const where = `[group.${name}]`;
    const g = table(v, where, file);
    groups.push([name, { name, run: stringSet(g.run, `${where} run`, file), build: stringSet(g.build, `${where} build`, file) }]);
  }
  const abs = resolve(file);
  return { file: abs, dir: dirname(abs), links, runs: byName(runs), groups: byName(groups) };
}

export async function readRaptorToml(path: string): Promise<RaptorConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new InputError(`no Raptor.toml here: ${path} does not exist`, 'Run part-image make in the folder of your Raptor.toml, or give -f FILE.', err);
    }
    throw new InputError(`cannot read ${path}: ${(err as Error).message}`, undefined, err);
  }
  return parseRaptorToml(text, path);
}
