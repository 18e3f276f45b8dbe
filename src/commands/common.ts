// Flags and output shared by the commands that verify an image.
import { accessSync, constants } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { Report } from '../types.js';
import type { VerifyOptions } from '../stages/context.js';
import { forcedPlace } from '../stages/where.js';
import { UsageError } from '../errors.js';
import { writeJsonReport } from '../report/json.js';
import { writeJunitReport } from '../report/junit.js';
import { formatTextReport } from '../report/text.js';
import { log } from '../log.js';
import { parseRole } from '../boot/role.js';

export type Options = NonNullable<ParseArgsConfig['options']>;
export type Values = Record<string, string | boolean | string[] | undefined>;

export const GLOBAL_OPTIONS: Options = {
  help: { type: 'boolean', short: 'h' },
  quiet: { type: 'boolean', short: 'q' },
  verbose: { type: 'boolean', short: 'v' },
};

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
  run(values: Values, positionals: string[]): Promise<number>;
}

/**
 * `--size-mb -5` and `--label -x`: a value that starts with "-" but is no
 * option of the command is that option's value (parseArgs would call it
 * ambiguous), so that the value itself is checked and its range named.
 * `--output --format` stays an error: a known option is never a value.
 */
export function joinDashValues(argv: readonly string[], options: Options): string[] {
  const known = new Set<string>();
  for (const [name, o] of Object.entries(options)) {
    known.add(`--${name}`);
    if (o.short) known.add(`-${o.short}`);
  }
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = argv[i + 1];
    const opt = a.startsWith('--') ? options[a.slice(2)] : undefined;
    if (opt?.type === 'string' && next !== undefined && next.startsWith('-') && next !== '--' && !known.has(next.split('=')[0])) {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
    if (a === '--') {
      out.push(...argv.slice(i + 1));
      break;
    }
  }
  return out;
}

export function parse(cmd: Command, argv: string[]): { values: Values; positionals: string[] } {
  let parsed;
  const options = { ...GLOBAL_OPTIONS, ...cmd.options };
  try {
    parsed = parseArgs({ args: joinDashValues(cmd.rewriteArgv ? cmd.rewriteArgv(argv) : argv, options), options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(`${cmd.name}: ${(err as Error).message}`, `Run \`part-image ${cmd.name} --help\` for the usage.`);
  }
  const values = parsed.values as Values;
  if (values.help) return { values, positionals: parsed.positionals };
  const [min, max] = cmd.positionals;
  if (parsed.positionals.length < min || parsed.positionals.length > max) {
    throw new UsageError(`${cmd.name}: expected ${min === max ? min : `${min} to ${max}`} argument(s), got ${parsed.positionals.length}`,
      `Usage: ${cmd.usage.split('\n')[0]}`);
  }
  return { values, positionals: parsed.positionals };
}

export function verifyOptions(v: Values, knownStages: readonly string[]): VerifyOptions {
  const skip = new Set(((v.skip as string[] | undefined) ?? []).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean));
  for (const s of skip) {
    if (!knownStages.includes(s)) throw new UsageError(`--skip: unknown stage "${s}"`, `Stages: ${knownStages.join(', ')}`);
  }
  let bootTimeoutMs = 120_000;
  if (typeof v['boot-timeout'] === 'string') {
    const m = /^(\d+)(ms|s|m)?$/.exec(v['boot-timeout']);
    if (!m) throw new UsageError(`--boot-timeout takes a duration like 90s or 2m, got "${v['boot-timeout']}"`);
    bootTimeoutMs = Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : 1000);
  }
  let bootStallMs: number | undefined;
  if (typeof v['boot-stall'] === 'string') {
    const m = /^(\d+)(ms|s|m)?$/.exec(v['boot-stall']);
    if (!m || Number(m[1]) <= 0) throw new UsageError(`--boot-stall takes a duration above 0 like 30s or 2m, got "${v['boot-stall']}"`);
    bootStallMs = Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : 1000);
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

/** Splits a command line on blanks, honouring simple single and double quotes. */
export function splitCommand(line: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  let m;
  while ((m = re.exec(line))) out.push(m[1] ?? m[2] ?? m[3]);
  if (out.length === 0) throw new UsageError('--nspawn-command is empty');
  return out;
}

/** Prints the summary to stdout and writes the requested report files. */
export async function emitReport(report: Report, v: Values): Promise<void> {
  if (log.verbosity !== 'quiet') process.stdout.write(formatTextReport(report));
  if (typeof v['report-json'] === 'string') await writeJsonReport(v['report-json'], report);
  if (typeof v.junit === 'string') await writeJunitReport(v.junit, report);
}
