// Flags and output shared by the commands that verify an image.
import { accessSync, constants } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Report } from '../types.js';
import type { VerifyOptions } from '../stages/context.js';
import { forcedPlace } from '../stages/where.js';
import { UsageError } from '../errors.js';
import { writeJsonReport } from '../report/json.js';
import { writeJunitReport } from '../report/junit.js';
import { formatTextReport } from '../report/text.js';
import { log } from '../log.js';
import { parseRole } from '../boot/role.js';
import { withScope, type Scope } from '../cleanup.js';

import { GLOBAL_OPTIONS, didYouMean, parseOptions, refuseContradictions, type Options, type Values } from './args.js';

export { GLOBAL_OPTIONS, type Options, type Values } from './args.js';

export const VERIFY_OPTIONS: Options = {
  skip: { type: 'string', multiple: true },
  'report-json': { type: 'string' },
  junit: { type: 'string' },
  'compare-mtime': { type: 'boolean' },
  golden: { type: 'string' },
  'update-golden': { type: 'boolean' },
  'golden-allow': { type: 'string' },
  'boot-timeout': { type: 'string' },
  'boot-stall': { type: 'string' },
  'allow-full': { type: 'boolean' },
  'allow-failed-unit': { type: 'string', multiple: true },
  'nspawn-command': { type: 'string' },
  portable: { type: 'boolean' },
  role: { type: 'string' },
  target: { type: 'string' },
};

export interface Command {
  name: string;
  summary: string;
  usage: string;
  options: Options;
  /** Number of positional arguments: [min, max]. */
  positionals: [number, number];
  /** Turns argv the option parser cannot read (make's `-L NAME PATH`, two values) into options it can. */
  rewriteArgv?(argv: string[]): string[];
  /** Option pairs that must not be given together (exit 2), with when they agree; -q with -v is refused for every command. */
  contradictions?: readonly (readonly [string, string, ((v: Values) => boolean)?])[];
  run(values: Values, positionals: string[]): Promise<number>;
}

export function parse(cmd: Command, argv: string[]): { values: Values; positionals: string[] } {
  const parsed = parseOptions(cmd.name, cmd.rewriteArgv ? cmd.rewriteArgv(argv) : argv, { ...GLOBAL_OPTIONS, ...cmd.options });
  const values = parsed.values;
  if (values.help) return parsed;
  refuseContradictions(cmd.name, values, [['quiet', 'verbose'], ...(cmd.contradictions ?? [])]);
  const [min, max] = cmd.positionals;
  if (parsed.positionals.length < min || parsed.positionals.length > max) {
    const extra = parsed.positionals.length > max ? parsed.positionals[max] : undefined;
    throw new UsageError(`${cmd.name}: expected ${min === max ? min : `${min} to ${max}`} argument(s), got ${parsed.positionals.length}${extra !== undefined ? ` ("${extra}" is one too many)` : ''}`,
      `Usage: ${cmd.usage.split('\n')[0]}`);
  }
  return parsed;
}

/**
 * A size flag in MiB that may carry a unit as systemd-repart takes it
 * (base 1024: B, K, M, G, T; `512M`, `2G`, `1.5G`): the number of MiB, as a
 * string for build/size.ts to range-check. Anything else is passed through
 * unchanged so that its own message names the range.
 */
export function sizeFlagMb(flag: string, value: string | boolean | string[] | undefined): string | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([BKMGT])\s*$/i.exec(value);
  if (!m) return value;
  const factor = { B: 1 / 2 ** 20, K: 1 / 1024, M: 1, G: 1024, T: 1024 * 1024 }[m[2].toUpperCase() as 'B' | 'K' | 'M' | 'G' | 'T'];
  const mb = Number(m[1]) * factor;
  if (!Number.isInteger(mb)) throw new UsageError(`${flag} ${value} is not a whole number of MiB (${mb} MiB)`, `An image is a whole number of MiB: give e.g. ${Math.ceil(mb)}M.`);
  return String(mb);
}

/** "90", "90s", "1500ms", "2m" in milliseconds; anything else is a usage error with `message`. */
function durationMs(value: string, message: string, o: { aboveZero?: boolean } = {}): number {
  const m = /^(\d+)(ms|s|m)?$/.exec(value);
  if (!m || (o.aboveZero && Number(m[1]) <= 0)) throw new UsageError(message);
  return Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : 1000);
}

export function verifyOptions(v: Values, knownStages: readonly string[]): VerifyOptions {
  const skip = new Set(((v.skip as string[] | undefined) ?? []).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean));
  for (const s of skip) {
    if (!knownStages.includes(s)) throw new UsageError(`--skip: unknown stage "${s}"${didYouMean(s, knownStages)}`, `Stages: ${knownStages.join(', ')}`);
  }
  let bootTimeoutMs = 120_000;
  if (typeof v['boot-timeout'] === 'string') {
    bootTimeoutMs = durationMs(v['boot-timeout'], `--boot-timeout takes a duration like 90s or 2m, got "${v['boot-timeout']}"`);
  }
  let bootStallMs: number | undefined;
  if (typeof v['boot-stall'] === 'string') {
    bootStallMs = durationMs(v['boot-stall'], `--boot-stall takes a duration above 0 like 30s or 2m, got "${v['boot-stall']}"`, { aboveZero: true });
  }
  if (v['update-golden'] && !v.golden) throw new UsageError('--update-golden needs --golden FILE');
  if (v['golden-allow'] && !v.golden) throw new UsageError('--golden-allow needs --golden FILE');
  // Files written at the end: a folder that cannot take them must fail now, not after the work.
  for (const flag of ['report-json', 'junit', ...(v['update-golden'] ? ['golden'] : [])]) {
    const file = v[flag];
    if (typeof file !== 'string') continue;
    try {
      accessSync(dirname(resolve(file)), constants.W_OK);
    } catch {
      throw new UsageError(`--${flag} ${file}: its folder does not exist or is not writable`, 'Create the folder first, or give another path.');
    }
  }
  if (bootTimeoutMs <= 0) throw new UsageError('--boot-timeout must be more than 0');
  const where = forcedPlace(process.env);
  if ('invalid' in where) throw new UsageError(where.invalid, 'Unset it to let part-image choose: the host when it can, else the VM.');
  return {
    skip,
    compareMtime: Boolean(v['compare-mtime']),
    golden: v.golden as string | undefined,
    updateGolden: Boolean(v['update-golden']),
    goldenAllow: v['golden-allow'] as string | undefined,
    checkReproducible: Boolean(v['check-reproducible']),
    bootTimeoutMs,
    ...(bootStallMs !== undefined ? { bootStallMs } : {}),
    ...(v['allow-full'] ? { allowFull: true } : {}),
    allowFailedUnits: (v['allow-failed-unit'] as string[] | undefined) ?? [],
    nspawnCommand: typeof v['nspawn-command'] === 'string' ? splitCommand(v['nspawn-command']) : undefined,
    portable: Boolean(v.portable),
    role: parseRole(v.role as string | undefined),
  };
}

/**
 * Reads one side of `manifest` or `diff` (an image, a tree, a tar) with live
 * progress on a TTY, then one line on stderr: what was read and how long it took.
 */
export async function readWithProgress<T extends { kind: string; manifest: { entries: readonly unknown[] } }>(what: string, read: (scope: Scope) => Promise<T>): Promise<T> {
  const start = Date.now();
  const r = await log.step(`read ${what}`, () => withScope(read));
  log.info(`read ${what}: ${r.kind}, ${r.manifest.entries.length} entries (${((Date.now() - start) / 1000).toFixed(1)} s)`);
  return r;
}

/** Splits a command line on blanks, honouring simple single and double quotes. */
export function splitCommand(line: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  let m;
  while ((m = re.exec(line))) out.push(m[1] ?? m[2] ?? m[3]);
  if (out.length === 0) throw new UsageError('--nspawn-command is empty');
  return out;
}

/**
 * Why a run that did not end accepted ended so, in one line: the boot cause,
 * or the first stage that failed and its first finding, or the first stage
 * that could not run here. Undefined for an accepted run, and for one that
 * stopped on an error (the CLI prints the error itself).
 */
export function verdictLine(report: Report): string | undefined {
  if (report.accepted || report.error) return undefined;
  const failed = report.stages.find((s) => s.status === 'failed');
  const what = report.image ?? report.output;
  if (failed) {
    const first = failed.findings[0];
    const more = failed.findings.length > 1 ? ` (and ${failed.findings.length - 1} more)` : '';
    const why = report.cause ?? (first ? `${failed.name}: ${first.message.split('\n')[0]}${more}` : `${failed.name} failed`);
    return `rejected${what ? `: ${what}` : ''}: ${why}`;
  }
  const blocked = report.stages.find((s) => s.status === 'skipped' && s.skippedBy === 'unavailable');
  if (blocked) return `not accepted${what ? `: ${what}` : ''}: the ${blocked.name} stage could not run here: ${blocked.reason ?? ''}`.trimEnd();
  return `not accepted${what ? `: ${what}` : ''}`;
}

/** With --quiet, the one line that says why the exit is not 0 (on stderr, where errors go). */
export function quietCause(line: string | undefined): void {
  if (line !== undefined && log.verbosity === 'quiet') process.stderr.write(`part-image: ${line}\n`);
}

/**
 * Prints the summary to stdout (with --quiet: only the verdict line of a
 * rejection, on stderr) and writes the requested report files.
 */
export async function emitReport(report: Report, v: Values): Promise<void> {
  if (log.verbosity !== 'quiet') process.stdout.write(formatTextReport(report));
  else quietCause(verdictLine(report));
  if (typeof v['report-json'] === 'string') await writeJsonReport(v['report-json'], report);
  if (typeof v.junit === 'string') await writeJunitReport(v.junit, report);
}
