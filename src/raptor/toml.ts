// Raptor.toml, read with smol-toml into the few parts `part-image make` uses:
// the [raptor.link] names, the [run.X] entries and the [group.X] lists.
// Shapes follow Raptor's `make` chapter: `input` and `output` take a string
// or a list; `env` is a table of strings (numbers are accepted and turned
// into strings, as a shell would see them).
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { InputError } from '../errors.js';

export interface RaptorRun {
  name: string;
  /** The builder, e.g. "$rbuild.part-image". */
  target: string;
  /** As written: paths or Raptor target names. */
  inputs: string[];
  outputs: string[];
  env: Record<string, string>;
}

export interface RaptorGroup {
  name: string;
  /** Names of runs (or of other groups). */
  run: string[];
}

export interface RaptorConfig {
  /** Absolute path of the Raptor.toml. */
  file: string;
  /** Its folder: relative inputs and outputs resolve against it. */
  dir: string;
  links: Record<string, string>;
  /** In file order. */
  runs: Map<string, RaptorRun>;
  groups: Map<string, RaptorGroup>;
}

const SHAPE_HINT =
  'Raptor.toml has [raptor.link] NAME = "path", [run.NAME] with target = "$LINK.part-image", input, output ' +
  'and env.OUTPUT_FORMAT / env.FREE_MB / env.USED_MB / env.SIZE_MB, and [group.NAME] with run = ["RUN", ...] (see docs/raptor.md).';

type Table = Record<string, unknown>;

function isTable(v: unknown): v is Table {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function table(v: unknown, where: string, file: string): Table {
  if (v === undefined) return {};
  if (!isTable(v)) throw new InputError(`${file}: ${where} must be a table`, SHAPE_HINT);
  return v;
}

/** A string or a list of strings (Raptor's "a single element can be given as a string"). */
function stringList(v: unknown, where: string, file: string): string[] {
  if (v === undefined) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const item of list) {
    if (typeof item !== 'string' || item === '') {
      throw new InputError(`${file}: ${where} must be a string or a list of strings, got ${JSON.stringify(v)}`, SHAPE_HINT);
    }
  }
  return list as string[];
}

function envTable(v: unknown, where: string, file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, value] of Object.entries(table(v, where, file))) {
    if (typeof value === 'string') out[k] = value;
    else if (typeof value === 'number' || typeof value === 'bigint') out[k] = String(value);
    else throw new InputError(`${file}: ${where}.${k} must be a string or a number, got ${JSON.stringify(value)}`, SHAPE_HINT);
  }
  return out;
}

/** Parses the text of a Raptor.toml. Pure: `file` only names it in messages and anchors relative paths. */
export function parseRaptorToml(text: string, file: string): RaptorConfig {
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (err) {
    const msg = err instanceof TomlError ? err.message.split('\n')[0] : (err as Error).message;
    throw new InputError(`${file} is not valid TOML: ${msg}`, 'Fix the syntax; `part-image make --list` checks the file without building.', err);
  }
  const raptor = table(doc.raptor, '[raptor]', file);
  const links: Record<string, string> = {};
  for (const [k, v] of Object.entries(table(raptor.link, '[raptor.link]', file))) {
    if (typeof v !== 'string') throw new InputError(`${file}: [raptor.link] ${k} must be a path string`, SHAPE_HINT);
    links[k] = v;
  }
  const runs = new Map<string, RaptorRun>();
  for (const [name, v] of Object.entries(table(doc.run, '[run]', file))) {
    const where = `[run.${name}]`;
    const t = table(v, where, file);
    if (typeof t.target !== 'string' || t.target === '') {
      throw new InputError(`${file}: ${where} has no target`, 'Give it target = "$rbuild.part-image", with rbuild a key of [raptor.link].');
    }
    runs.set(name, {
      name,
      target: t.target,
      inputs: stringList(t.input, `${where} input`, file),
      outputs: stringList(t.output, `${where} output`, file),
      env: envTable(t.env, `${where} env`, file),
    });
  }
  const groups = new Map<string, RaptorGroup>();
  for (const [name, v] of Object.entries(table(doc.group, '[group]', file))) {
    const where = `[group.${name}]`;
    groups.set(name, { name, run: stringList(table(v, where, file).run, `${where} run`, file) });
  }
  const abs = resolve(file);
  return { file: abs, dir: dirname(abs), links, runs, groups };
}

export async function readRaptorToml(path: string): Promise<RaptorConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new InputError(`no Raptor.toml here: ${path} does not exist`, 'Run part-image make in the folder of your Raptor.toml, or give --file PATH.', err);
    }
    throw new InputError(`cannot read ${path}: ${(err as Error).message}`, undefined, err);
  }
  return parseRaptorToml(text, path);
}
