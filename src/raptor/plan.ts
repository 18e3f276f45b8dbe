// Which [run.X] entries `part-image make` builds, and with what: the builder
// of each run, group expansion, and the run's input/output/env checked and
// resolved before anything is built (so a bad entry aborts with exit 2
// before the first image is made).
import { isAbsolute, resolve } from 'node:path';
import { InputError, UsageError } from '../errors.js';
import { OUTPUT_FORMATS, parseFormat, type OutputFormat } from '../build/convert.js';
import type { RaptorConfig, RaptorRun } from './toml.js';

/** Builders part-image can stand in for: `$LINK.<builder>`. */
export const SUPPORTED_BUILDERS = ['part-image'] as const;

/** The builder's env vars that `make` honours; the rest of a run's env does not concern part-image. */
export const BUILDER_ENV = ['OUTPUT_FORMAT', 'FREE_MB', 'USED_MB', 'SIZE_MB'] as const;

export interface TargetRef {
  /** The [raptor.link] key, without the "$". */
  link?: string;
  /** The module path after the link: "part-image", "disk-image", ... */
  builder: string;
}

/** "$rbuild.part-image" -> {link: "rbuild", builder: "part-image"}; "foo.bar" -> {builder: "foo.bar"}. Pure. */
export function parseTarget(target: string): TargetRef {
  const m = /^\$([^.]*)\.(.+)$/.exec(target);
  if (m) return { link: m[1] === '' ? undefined : m[1], builder: m[2] };
  return { builder: target };
}

/** True when the run's target is `$LINK.part-image` with LINK a key of [raptor.link]. */
export function isPartImageRun(run: RaptorRun, config: RaptorConfig): boolean {
  const t = parseTarget(run.target);
  return t.link !== undefined && Object.hasOwn(config.links, t.link) && (SUPPORTED_BUILDERS as readonly string[]).includes(t.builder);
}

function linkHint(config: RaptorConfig): string {
  const links = Object.keys(config.links);
  const example = links[0] ?? 'rbuild';
  return `part-image make builds runs whose target is "$LINK.part-image", LINK being a key of [raptor.link]` +
    `${links.length ? ` (here: ${links.join(', ')})` : ` (add e.g. [raptor.link] ${example} = "raptor-builders")`}; ` +
    `supported builders: ${SUPPORTED_BUILDERS.join(', ')}. Build the other runs with \`raptor make\`.`;
}

/** Throws (exit 2) when part-image cannot build this run, naming the builder it uses. */
export function checkBuilder(run: RaptorRun, config: RaptorConfig): void {
  if (isPartImageRun(run, config)) return;
  const t = parseTarget(run.target);
  if (t.link !== undefined && !Object.hasOwn(config.links, t.link)) {
    throw new UsageError(`run ${run.name}: target "${run.target}" names the link $${t.link}, which [raptor.link] does not define`, linkHint(config));
  }
  if (t.link === undefined) {
    throw new UsageError(`run ${run.name}: target "${run.target}" is a module of this Raptor package, not a builder reached through [raptor.link]`, linkHint(config));
  }
  throw new UsageError(`run ${run.name}: target "${run.target}" is the ${t.builder} builder, not part-image`, linkHint(config));
}

/**
 * The runs to build, in order, without duplicates. Names are runs or groups
 * (groups may name groups). No names: every part-image run of the file.
 */
export function selectRuns(config: RaptorConfig, names: readonly string[]): { runs: RaptorRun[]; ignored: RaptorRun[] } {
  if (names.length === 0) {
    const all = [...config.runs.values()];
    // A part-image run through an undefined link is an error, not another builder.
    const runs = all.filter((r) => (SUPPORTED_BUILDERS as readonly string[]).includes(parseTarget(r.target).builder));
    for (const run of runs) checkBuilder(run, config);
    if (runs.length === 0) {
      throw new UsageError(`${config.file} has no [run.X] entry with target "$LINK.part-image"`, linkHint(config));
    }
    return { runs, ignored: all.filter((r) => !runs.includes(r)) };
  }
  const out: RaptorRun[] = [];
  const expand = (name: string, via: string[]): void => {
    const run = config.runs.get(name);
    if (run) {
      if (!out.includes(run)) out.push(run);
      return;
    }
    const group = config.groups.get(name);
    if (!group) {
      const from = via.length ? ` (listed in group ${via.at(-1)})` : '';
      throw new UsageError(`no run or group named "${name}" in ${config.file}${from}`,
        `Runs: ${[...config.runs.keys()].join(', ') || 'none'}; groups: ${[...config.groups.keys()].join(', ') || 'none'}.`);
    }
    if (via.includes(name)) throw new InputError(`${config.file}: group ${name} includes itself (${[...via, name].join(' -> ')})`);
    for (const n of group.run) expand(n, [...via, name]);
  };
  for (const n of names) expand(n, []);
  for (const run of out) checkBuilder(run, config);
  return { runs: out, ignored: [] };
}

export interface RunPlan {
  name: string;
  /** Absolute paths, as written in `input` and resolved against the Raptor.toml's folder. */
  inputs: string[];
  /** `input` as written, for messages. */
  inputSpecs: string[];
  output: string;
  format: OutputFormat;
  /** OUTPUT_FORMAT / FREE_MB / USED_MB / SIZE_MB of the run's env, when set. */
  builderEnv: Partial<Record<(typeof BUILDER_ENV)[number], string>>;
  /** The run's whole env (SOURCE_DATE_EPOCH, say, is honoured too). */
  env: Record<string, string>;
}

function checkMb(run: string, name: string, value: string | undefined): void {
  if (value === undefined || value === '') return;
  if (!/^\d+$/.test(value.trim())) {
    throw new InputError(`run ${run}: env.${name} must be a whole number of MiB, got "${value}"`, `Write e.g. env.${name} = "64".`);
  }
}

/** Checks and resolves one run (no file system access). */
export function planRun(run: RaptorRun, config: RaptorConfig): RunPlan {
  checkBuilder(run, config);
  const at = (p: string): string => (isAbsolute(p) ? p : resolve(config.dir, p));
  if (run.inputs.length === 0) {
    throw new InputError(`run ${run.name} has no input`, 'Give it input = "PATH": a directory, a tar archive or a layer stack, relative to the Raptor.toml.');
  }
  if (run.outputs.length !== 1) {
    throw new InputError(`run ${run.name} needs exactly one output, got ${run.outputs.length}`,
      'The part-image builder has one output mount, a file: give output = "part.img".');
  }
  const builderEnv: RunPlan['builderEnv'] = {};
  for (const k of BUILDER_ENV) if (run.env[k] !== undefined) builderEnv[k] = run.env[k];
  for (const k of ['FREE_MB', 'USED_MB', 'SIZE_MB'] as const) checkMb(run.name, k, builderEnv[k]);
  let format: OutputFormat;
  try {
    format = parseFormat(builderEnv.OUTPUT_FORMAT);
  } catch {
    throw new InputError(`run ${run.name}: unknown env.OUTPUT_FORMAT "${builderEnv.OUTPUT_FORMAT}"`, `Use one of: ${OUTPUT_FORMATS.join(', ')}.`);
  }
  return { name: run.name, inputs: run.inputs.map(at), inputSpecs: run.inputs, output: at(run.outputs[0]), format, builderEnv, env: run.env };
}
