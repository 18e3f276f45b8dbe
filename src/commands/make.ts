// `part-image make`: Raptor's `raptor make` for the runs part-image can build.
// The grammar and the CLI are Raptor's (src/make/parser.rs, src/bin/raptor.rs):
// -f FILE, run names, %group, no names for every run, -n (plan only), -q,
// -b (batch: part-image has no TUI, so always), -L NAME PATH. A run of
// another builder, a group's `build` list and a part-image run whose input
// is a Raptor target are left to Raptor, by name and (for the last) with the
// exact command. Runs whose output is newer than their inputs are skipped,
// as Raptor skips them; -B (--always-make) rebuilds them.
import { mkdir } from 'node:fs/promises';
import { dirname, extname, relative } from 'node:path';
import type { Command, Values } from './common.js';
import { VERIFY_OPTIONS, emitReport, verifyOptions } from './common.js';
import { withScope } from '../cleanup.js';
import { buildImage } from '../pipeline.js';
import { ALL_STAGE_NAMES } from '../stages/index.js';
import { PartImageError, UsageError } from '../errors.js';
import { log } from '../log.js';
import { readRaptorToml, type RaptorConfig } from '../raptor/toml.js';
import { BUILDER_ENV, isPartImageRun, planRun, raptorWouldRun, selectRuns, type RunPlan } from '../raptor/plan.js';
import { classifyInput, raptorCommand, resolveRunInput, type InputKind } from '../raptor/inputs.js';
import { mergeLinks } from '../raptor/module-name.js';
import { checkFreshness } from '../raptor/up-to-date.js';
import { parseRole, ROLE_ENV, type ImageRole } from '../boot/role.js';

export const makeCommand: Command = {
  name: 'make',
  summary: 'build the part-image runs of a Raptor.toml, as `raptor make` would, verified',
  usage: `part-image make [RUN|%GROUP...] [-f Raptor.toml] [-n] [-q] [-b] [-B] [-L NAME PATH]...
                [--skip STAGE,...] [--role root|portable|data] [--target NAME]
                [--golden FILE [--update-golden]] [--compare-mtime] [--report-json FILE] [--junit FILE]

  Reads Raptor.toml (default ./Raptor.toml) as \`raptor make\` does and builds each selected run
  whose target is the part-image builder ("$LINK.part-image"), exactly as \`part-image build\` does:
  every stage must pass before the image reaches the run's output. No names: every run.
  RUN names a [run.X]; %GROUP a [group.X] (its run list; its build list is left to raptor make).
  Runs of other builders are listed as left to \`raptor make\`, not built and not an error.
  Per run: input (a Raptor target NAME.rapt, which only Raptor can build: the command is printed;
  or a directory, tar or layers mount beside the Raptor.toml; several directories are merged in
  order, the first at the bottom), output (the image file; $LINK components resolved, relative to
  the current folder, as Raptor does), env.OUTPUT_FORMAT (${'raw, qcow2, qcow, qed, vdi, vhdx, vmdk, vpc'}),
  env.FREE_MB, env.USED_MB, env.SIZE_MB, env.PART_IMAGE_ROLE (strings). As in a Raptor container, these
  come from the run's env only, never from your shell.
  -n (--no-act): print the plan (what would be built, skipped, or left to Raptor), write nothing.
  -B (--always-make): build runs whose output is already newer than their input (Raptor has no such
  flag; delete the output there). -L NAME PATH: a link, as Raptor's -L ([raptor.link] wins).
  With several runs, report files get the run name before their extension: report.part1.json.
  Exit code: the worst of the runs (1 if any was rejected); 2 for a run that cannot be planned
  (every run is planned and each problem named first); 3 stops at the first such run.

Examples:
  part-image make
  part-image make -n %all
  part-image make part1 --report-json report.json --junit junit.xml
  part-image make -f images/Raptor.toml -L rbuild ../raptor-builders part1`,
  options: {
    file: { type: 'string', short: 'f' },
    'no-act': { type: 'boolean', short: 'n' },
    list: { type: 'boolean' },
    batch: { type: 'boolean', short: 'b' },
    'always-make': { type: 'boolean', short: 'B' },
    link: { type: 'string', multiple: true },
    ...VERIFY_OPTIONS,
  },
  positionals: [0, Infinity],
  rewriteArgv: rewriteLinkArgs,
  async run(v, names) {
    const config = await readRaptorToml((v.file as string | undefined) ?? 'Raptor.toml');
    const links = mergeLinks(config.links, parseLinkValues(v.link as string[] | undefined));
    const { runs, builds } = selectRuns(config, names);
    const verify = verifyOptions(v, ALL_STAGE_NAMES);
    const planOnly = Boolean(v['no-act'] || v.list);
    const cwd = process.cwd();
    const say = (line: string) => {
      if (planOnly) process.stdout.write(`${line}\n`);
      else log.info(`make: ${line}`);
    };

    // Plan every run first: one bad run is named, and never hides the plan of the others.
    const plans: { plan: RunPlan; inputs: InputKind[] }[] = [];
    const problems: { run: string; err: PartImageError }[] = [];
    const needRaptor: { plan: RunPlan; command: string }[] = [];
    for (const run of runs) {
      if (!isPartImageRun(run)) {
        say(`left to raptor make: ${run.name} (builder ${run.target}): raptor make would run ${raptorWouldRun(run)}`);
        continue;
      }
      try {
        const plan = planRun(run, links, cwd);
        const inputs: InputKind[] = [];
        for (const spec of plan.inputSpecs) inputs.push(await classifyInput(run.name, spec, config, links));
        if (inputs.some((i) => i.kind === 'target')) needRaptor.push({ plan, command: await raptorCommand(plan, config, links) });
        else plans.push({ plan, inputs });
      } catch (err) {
        if (!(err instanceof PartImageError) || err.exitCode !== 2) throw err;
        problems.push({ run: run.name, err });
      }
    }
    for (const b of builds) say(`left to raptor make: build ${b.target} (from %${b.group}): only Raptor builds layers`);
    checkPlans(plans.map((p) => p.plan), v);

    const todo: typeof plans = [];
    for (const p of plans) {
      const fresh = v['always-make'] ? undefined : await checkFreshness([p.plan.output], p.inputs.map((i) => (i.kind === 'path' ? i.path : '')));
      if (fresh?.upToDate) say(`up to date: ${p.plan.name}: ${rel(p.plan.output)} is newer than its input, skipped as raptor make does (-B builds it)`);
      else todo.push(p);
    }
    for (const { plan, command } of needRaptor) {
      const targets = plan.inputSpecs.join(', ');
      const one = plan.inputSpecs.length > 1 ? ' (Raptor\'s --overlay input mount takes one target: make one target of these first)' : '';
      say(`needs Raptor: ${plan.name}: its input ${targets} is a Raptor target, which only Raptor can build${one}. With part-image as the builder:\n  ${command}`);
    }
    for (const { run, err } of problems) {
      if (planOnly) say(`cannot plan ${run}: ${err.message}${err.hint ? `\n  ${err.hint.split('\n').join('\n  ')}` : ''}`);
    }
    if (planOnly) {
      for (const { plan } of todo) say(`would build ${describe(plan)}`);
      return problems.length ? 2 : 0;
    }
    if (problems.length > 1) for (const { err } of problems.slice(1)) log.warn(`error: ${err.message}`);
    if (problems.length) throw problems[0].err;
    if (needRaptor.length) {
      throw new UsageError(`${needRaptor.map((n) => `run ${n.plan.name}`).join(', ')}: the input is a Raptor target; part-image cannot build it without Raptor`,
        `Run it with Raptor, part-image as the builder:\n${needRaptor.map((n) => `  ${n.command}`).join('\n')}`);
    }
    if (plans.length === 0) {
      throw new UsageError(`nothing for part-image to build in ${config.file}: no selected run uses the part-image builder`,
        'Runs of other builders are left to `raptor make`; a part-image run has target = "$LINK.part-image".');
    }
    const shellVars = BUILDER_ENV.filter((k) => process.env[k] !== undefined && process.env[k] !== '');
    if (shellVars.length) log.warn(`make ignores ${shellVars.join(', ')} from your shell: set env.NAME in the [run.X] entry instead`);
    return buildAll(todo, config, v, verify);
  },
};

async function buildAll(todo: { plan: RunPlan; inputs: InputKind[] }[], _config: RaptorConfig, v: Values, verify: ReturnType<typeof verifyOptions>): Promise<number> {
  return withScope(async (scope) => {
    const inputs = new Map<string, string>();
    for (const p of todo) inputs.set(p.plan.name, await resolveRunInput(p.plan, p.inputs, scope));
    let worst = 0;
    const outcomes: string[] = [];
    for (const [i, { plan: p }] of todo.entries()) {
      log.info(`make: building run ${p.name} (${i + 1}/${todo.length}): ${describe(p)}`);
      await mkdir(dirname(p.output), { recursive: true });
      const { report, exitCode } = await buildImage({
        input: inputs.get(p.name)!,
        output: p.output,
        format: p.format,
        label: 'root',
        target: p.inputSpecs.length === 1 ? (v.target as string | undefined) : undefined,
        verify: { ...verify, ...roleOption(v, p) },
        env: runEnv(p),
      });
      report.command = `make ${p.name}`;
      report.input = todo[i].inputs.map((k) => (k.kind === 'path' ? k.path : k.spec)).join(' + ');
      if (log.verbosity !== 'quiet') process.stdout.write(`run ${p.name}:\n`);
      await emitReport(report, reportValues(v, p.name, todo.length > 1));
      outcomes.push(`  ${report.accepted ? 'ACCEPTED' : 'REJECTED'}  ${p.name}  ${report.image ?? p.output}`);
      // A run that could not be checked here (exit 3) stops the make, as a thrown 2 or 3 does.
      if (exitCode >= 2) return exitCode;
      worst = Math.max(worst, exitCode);
    }
    if (todo.length > 1 && log.verbosity !== 'quiet') process.stdout.write(`\nmake: ${todo.length} runs\n${outcomes.join('\n')}\n`);
    return worst;
  });
}

/** --role, else the run's env.PART_IMAGE_ROLE, as the builder reads it in the container. */
function roleOption(v: Values, p: RunPlan): { role?: ImageRole } {
  if (typeof v.role === 'string') return {};
  const role = parseRole(p.env[ROLE_ENV], `run ${p.name}: env.${ROLE_ENV}`);
  return role ? { role } : {};
}

const rel = (x: string) => relative(process.cwd(), x) || '.';

function describe(p: RunPlan): string {
  const env = Object.entries(p.builderEnv).filter(([k]) => k !== 'OUTPUT_FORMAT').map(([k, val]) => ` ${k}=${val}`).join('');
  return `${p.name}: ${p.inputSpecs.join(' + ')} -> ${rel(p.output)} (${p.format}${env})`;
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

/** -L NAME PATH (two values, as Raptor's clap takes them) -> --link=NAME=PATH. */
export function rewriteLinkArgs(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (a === '-L' || a === '--link') {
      const [name, path] = [argv[i + 1], argv[i + 2]];
      if (name === undefined || path === undefined) throw new UsageError(`${a} takes two values: NAME PATH`, 'For example: -L rbuild ../raptor-builders');
      out.push(`--link=${name}=${path}`);
      i += 2;
    } else {
      out.push(a);
    }
  }
  return out;
}

function parseLinkValues(values: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values ?? []) {
    const eq = v.indexOf('=');
    if (eq <= 0) throw new UsageError(`--link ${v}: give -L NAME PATH`);
    out[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return out;
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
