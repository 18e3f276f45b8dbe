import { mkdir } from 'node:fs/promises';
import { dirname, extname, relative } from 'node:path';
import type { Command, Values } from './common.js';
import { VERIFY_OPTIONS, emitReport, verifyOptions } from './common.js';
import { withScope } from '../cleanup.js';
import { buildImage } from '../pipeline.js';
import { ALL_STAGE_NAMES } from '../stages/index.js';
import { UsageError } from '../errors.js';
import { log } from '../log.js';
import { readRaptorToml } from '../raptor/toml.js';
import { BUILDER_ENV, planRun, selectRuns, type RunPlan } from '../raptor/plan.js';
import { resolveRunInput } from '../raptor/inputs.js';

export const makeCommand: Command = {
  name: 'make',
  summary: 'build the part-image runs of a Raptor.toml ([run.X] with target "$LINK.part-image")',
  usage: `part-image make [RUN|GROUP...] [--file Raptor.toml] [--list] [--skip STAGE,...] [--target NAME]
                [--golden FILE [--update-golden]] [--compare-mtime] [--report-json FILE] [--junit FILE]

  Reads Raptor.toml (default ./Raptor.toml) and builds each [run.X] whose target is
  "$LINK.part-image", LINK being a key of [raptor.link], exactly as \`part-image build\` does:
  every stage must pass before the image reaches the run's output. No names: every part-image run.
  A group ([group.X] run = [...]) names runs or other groups.
  Per run: input (a path relative to the Raptor.toml: a directory, a tar or a layer stack; a list
  of directories is merged in order, the first at the bottom), output (the image file), and
  env.OUTPUT_FORMAT (raw|qcow2|vmdk), env.FREE_MB, env.USED_MB, env.SIZE_MB. As in a Raptor
  container, those four come from the run's env only, never from your shell.
  With several runs, report files get the run name before their extension: report.part1.json.
  Exit code: the worst of the runs (1 if any was rejected); 2 or 3 stop at the first such run.

Examples:
  part-image make
  part-image make part1 --report-json report.json --junit junit.xml
  part-image make --file images/Raptor.toml --list`,
  options: {
    file: { type: 'string', short: 'f' },
    list: { type: 'boolean' },
    ...VERIFY_OPTIONS,
  },
  positionals: [0, Infinity],
  async run(v, names) {
    const config = await readRaptorToml((v.file as string | undefined) ?? 'Raptor.toml');
    const { runs, ignored } = selectRuns(config, names);
    const plans = runs.map((r) => planRun(r, config));
    const verify = verifyOptions(v, ALL_STAGE_NAMES);
    checkPlans(plans, v);
    for (const r of ignored) log.info(`make: not a part-image run, left to \`raptor make\`: ${r.name} (target ${r.target})`);
    if (v.list) {
      for (const p of plans) process.stdout.write(`${describe(p)}\n`);
      return 0;
    }
    const shellVars = BUILDER_ENV.filter((k) => process.env[k] !== undefined && process.env[k] !== '');
    if (shellVars.length) log.warn(`make ignores ${shellVars.join(', ')} from your shell: set env.NAME in the [run.X] entry instead`);

    return withScope(async (scope) => {
      // Every input is checked before the first image is built: a bad one aborts with nothing half done.
      const inputs = new Map<string, string>();
      for (const p of plans) inputs.set(p.name, await resolveRunInput(p, config, scope));
      let worst = 0;
      const outcomes: string[] = [];
      for (const [i, p] of plans.entries()) {
        log.info(`make: building run ${p.name} (${i + 1}/${plans.length}): ${describe(p)}`);
        await mkdir(dirname(p.output), { recursive: true });
        const { report, exitCode } = await buildImage({
          input: inputs.get(p.name)!,
          output: p.output,
          format: p.format,
          label: 'root',
          target: p.inputs.length === 1 ? (v.target as string | undefined) : undefined,
          verify,
          env: runEnv(p),
        });
        report.command = `make ${p.name}`;
        report.input = p.inputs.join(' + ');
        if (log.verbosity !== 'quiet') process.stdout.write(`run ${p.name}:\n`);
        await emitReport(report, reportValues(v, p.name, plans.length > 1));
        outcomes.push(`  ${report.accepted ? 'ACCEPTED' : 'REJECTED'}  ${p.name}  ${report.image ?? p.output}`);
        // A run that could not be checked here (exit 3) stops the make, as a thrown 2 or 3 does.
        if (exitCode >= 2) return exitCode;
        worst = Math.max(worst, exitCode);
      }
      if (plans.length > 1 && log.verbosity !== 'quiet') process.stdout.write(`\nmake: ${plans.length} runs\n${outcomes.join('\n')}\n`);
      return worst;
    });
  },
};

function describe(p: RunPlan): string {
  const rel = (x: string) => relative(process.cwd(), x) || '.';
  const env = Object.entries(p.builderEnv).filter(([k]) => k !== 'OUTPUT_FORMAT').map(([k, val]) => ` ${k}=${val}`).join('');
  return `${p.name}: ${p.inputs.map(rel).join(' + ')} -> ${rel(p.output)} (${p.format}${env})`;
}

function checkPlans(plans: RunPlan[], v: Values): void {
  const byOutput = new Map<string, string>();
  for (const p of plans) {
    const other = byOutput.get(p.output);
    if (other) throw new UsageError(`runs ${other} and ${p.name} both write ${p.output}`, 'Give each run its own output.');
    byOutput.set(p.output, p.name);
  }
  if (typeof v.golden === 'string' && plans.length > 1) {
    throw new UsageError(`--golden compares one image, but ${plans.length} runs were selected (${plans.map((p) => p.name).join(', ')})`,
      'Name the one run to check: part-image make RUN --golden FILE.');
  }
}

/** The environment of a Raptor container: the run's env decides the builder's variables, not the shell's. */
function runEnv(p: RunPlan): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of BUILDER_ENV) delete env[k];
  return { ...env, ...p.env };
}

/** report.json -> report.RUN.json when several runs share the flag. */
export function perRunPath(path: string, run: string): string {
  const safe = run.replace(/[^A-Za-z0-9._-]/g, '_');
  const ext = extname(path);
  return ext ? `${path.slice(0, -ext.length)}.${safe}${ext}` : `${path}.${safe}`;
}

function reportValues(v: Values, run: string, several: boolean): Values {
  if (!several) return v;
  const out: Values = { ...v };
  for (const k of ['report-json', 'junit']) if (typeof v[k] === 'string') out[k] = perRunPath(v[k] as string, run);
  return out;
}
