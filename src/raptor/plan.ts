// Which [run.X] entries a make selects, and how part-image would build each:
// the selection as Raptor's planner makes it (src/bin/raptor.rs, make/planner.rs:
// "NAME" is a run, "%NAME" a group, no names every run), the builder of each
// run, and the run's output/env checked and resolved (no file system access
// here; inputs.ts looks at the disk). A run of another builder is not an
// error: it is left to `raptor make`, by name.
import { isAbsolute, resolve } from 'node:path';
import { InputError, UsageError } from '../errors.js';
import { WRITABLE_FORMATS as OUTPUT_FORMATS, formatListHint as formatHint, type WritableFormat as OutputFormat } from '../tools/qemu-img.js';
import type { RaptorConfig, RaptorRun } from './toml.js';
import { parseModuleName, resolveLogicalPath } from './module-name.js';

/** The builder part-image stands in for: a module named part-image ($rbuild.part-image in raptor-builders). */
export const PART_IMAGE_BUILDER = 'part-image';

/** The builder's env vars, as raptor-builders' generate-part.sh and diskspace.zsh read them. */
export const BUILDER_ENV = ['OUTPUT_FORMAT', 'FREE_MB', 'USED_MB', 'SIZE_MB'] as const;

/** True when the run's target is a module named part-image ("$rbuild.part-image", "$.x.part-image", "part-image"). */
export function isPartImageRun(run: RaptorRun): boolean {
  const m = parseModuleName(run.target);
  return m.parts.at(-1) === PART_IMAGE_BUILDER && m.instance === undefined;
}

export interface Selection {
  /** The runs, in the order named (a group's in its sorted order), without duplicates. */
  runs: RaptorRun[];
  /** [group.X] build entries: layers only Raptor builds. */
  builds: { group: string; target: string }[];
}

function runNamesHint(config: RaptorConfig): string {
  const groups = [...config.groups.keys()].map((g) => `%${g}`);
  return `Runs: ${[...config.runs.keys()].join(', ') || 'none'}; groups: ${groups.join(', ') || 'none'}.`;
}

/** Raptor's selection: no names is every run (sorted by name); "%G" is group G; anything else a run. */
export function selectRuns(config: RaptorConfig, names: readonly string[]): Selection {
  if (names.length === 0) return { runs: [...config.runs.values()], builds: [] };
  const runs: RaptorRun[] = [];
  const builds: Selection['builds'] = [];
  const addRun = (name: string, via?: string) => {
    const run = config.runs.get(name);
    if (!run) {
      const from = via ? ` (listed in [group.${via}] run)` : '';
      const hint = !via && config.groups.has(name) ? `${name} is a group: name it %${name}, as raptor make does. ` : '';
      throw new UsageError(`no run named "${name}" in ${config.file}${from}`, `${hint}${runNamesHint(config)}`);
    }
    if (!runs.includes(run)) runs.push(run);
  };
  for (const n of names) {
    if (!n.startsWith('%')) {
      addRun(n);
      continue;
    }
    const group = config.groups.get(n.slice(1));
    if (!group) throw new UsageError(`no group named "${n.slice(1)}" in ${config.file}`, runNamesHint(config));
    for (const r of group.run) addRun(r, group.name);
    for (const b of group.build) builds.push({ group: group.name, target: b });
  }
  return { runs, builds };
}

export interface RunPlan {
  name: string;
  run: RaptorRun;
  /** `input` as written. */
  inputSpecs: string[];
  /** The image file: `output` with $links resolved, relative to the folder make runs in (as Raptor's file mount). */
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

/** Checks and resolves one part-image run (no file system access). `cwd` anchors relative outputs, as in Raptor. */
export function planRun(run: RaptorRun, links: Record<string, string>, cwd: string): RunPlan {
  if (run.inputs.length === 0) {
    throw new InputError(`run ${run.name} has no input`, 'Give it input = "TARGET" (a Raptor target), or a directory, tar or layer stack beside the Raptor.toml.');
  }
  if (run.outputs.length !== 1) {
    throw new InputError(`run ${run.name} needs exactly one output, got ${run.outputs.length}`,
      'The part-image builder has one output mount, a file: give output = "part.img".');
  }
  const builderEnv: RunPlan['builderEnv'] = {};
  for (const k of BUILDER_ENV) if (run.env[k] !== undefined) builderEnv[k] = run.env[k];
  for (const k of ['FREE_MB', 'USED_MB', 'SIZE_MB'] as const) checkMb(run.name, k, builderEnv[k]);
  const fmt = (builderEnv.OUTPUT_FORMAT || 'raw').toLowerCase();
  if (!(OUTPUT_FORMATS as readonly string[]).includes(fmt)) {
    throw new InputError(`run ${run.name}: unknown env.OUTPUT_FORMAT "${builderEnv.OUTPUT_FORMAT}"`, formatHint());
  }
  const out = resolveLogicalPath(run.outputs[0], links, `run ${run.name} output`);
  return {
    name: run.name, run, inputSpecs: run.inputs, output: isAbsolute(out) ? out : resolve(cwd, out),
    format: fmt as OutputFormat, builderEnv, env: run.env,
  };
}

/** What `raptor make -n` prints for a run: "Would run TARGET -C c -I i -O o" (make/maker.rs). */
export function raptorWouldRun(run: RaptorRun): string {
  return `${run.target}${run.cache.map((c) => ` -C ${c}`).join('')}${run.inputs.map((i) => ` -I ${i}`).join('')}${run.outputs.map((o) => ` -O ${o}`).join('')}`;
}
