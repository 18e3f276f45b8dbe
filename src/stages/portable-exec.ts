// What a portable service needs instead of an init: portablectl runs its
// units with the host's systemd, so the image must hold each unit's
// ExecStart binary, runnable here, with its interpreter and libraries. The
// diagnose stage checks that (through diagnoseTree's exec-mode checks, one
// per unit); the nspawn stage runs a oneshot unit's ExecStart in exec mode,
// the one case where a run ends by itself and its exit status means
// something.
import type { Finding, Manifest } from '../types.js';
import { manifestLookup, resolvePath } from '../boot/resolve.js';
import { diagnoseTree } from './diagnose.js';
import { readImageFiles } from '../boot/read-files.js';
import { imageManifestOf, type StageContext, type StageOutcome } from './context.js';
import { matchingUnits, portablePrefix } from './portable-lint.js';

export interface ServiceExec {
  unit: string;
  /** ExecStart's argv, with systemd's prefixes (-, @, :, +, !) removed; the first ExecStart= line. */
  command?: string[];
  type: string;
}

/** Splits systemd's command line: blanks separate words, "..." and '...' quote. */
function splitWords(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:\\.|[^"\\])*)"|'([^']*)'|(\S+)/g;
  let m;
  while ((m = re.exec(line))) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

/** The [Service] section's first ExecStart= and Type= of a unit file. Pure. */
export function parseServiceExec(unit: string, text: string): ServiceExec {
  let section = '';
  let command: string[] | undefined;
  let type = 'simple';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('[')) section = line;
    if (section !== '[Service]') continue;
    const m = /^(ExecStart|Type)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === 'Type' && m[2]) type = m[2];
    if (m[1] === 'ExecStart' && m[2] && !command) command = splitWords(m[2].replace(/^[-@:+!]+/, ''));
  }
  return { unit, command, type };
}

async function serviceExecs(ctx: StageContext, manifest: Manifest): Promise<ServiceExec[]> {
  const lookup = manifestLookup(manifest);
  const units = matchingUnits(manifest, portablePrefix(ctx.imageName)).filter((u) => u.name.endsWith('.service'));
  const paths = new Map<string, string>();
  for (const u of units) {
    const r = resolvePath(lookup, u.path);
    if (r.ok) paths.set(u.name, r.path);
  }
  const files = await readImageFiles(ctx.image, [...paths.values()]);
  return units.map((u) => parseServiceExec(u.name, files.get(paths.get(u.name) ?? '')?.toString('utf8') ?? ''));
}

/** The diagnose stage for a portable service: each unit's ExecStart, as exec mode checks a command. */
export async function diagnosePortable(ctx: StageContext, why: string): Promise<StageOutcome> {
  const manifest = await imageManifestOf(ctx, { hash: false });
  const execs = await serviceExecs(ctx, manifest);
  const findings: Finding[] = [];
  const seen = new Set<string>();
  const read = (paths: readonly string[]) => readImageFiles(ctx.image, paths);
  for (const e of execs) {
    if (!e.command?.length) {
      findings.push({ code: 'no-exec-start', path: e.unit, message: `${e.unit} has no ExecStart= in its [Service] section: portablectl would attach a unit that cannot start` });
      continue;
    }
    const r = await diagnoseTree(manifest, read, { command: e.command, checkInit: false });
    for (const f of r.findings) {
      const key = `${f.code}\0${f.path}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const own = f.code.startsWith('command-') || f.code === 'missing-interpreter' || f.code === 'missing-library';
      findings.push(own ? { ...f, message: `${e.unit} ExecStart: ${f.message.replace(/; add it to the root tree or fix --nspawn-command$/, '; add it to the image')}` } : f);
    }
  }
  return {
    status: findings.length ? 'failed' : 'passed',
    findings,
    details: { role: 'portable', why, mode: 'portable', units: execs.map((e) => ({ unit: e.unit, type: e.type, execStart: e.command })) },
  };
}

/** The command the nspawn stage runs for a portable service, or why it runs none. */
export async function portableNspawnCommand(ctx: StageContext): Promise<{ command: string[]; unit: string } | { reason: string }> {
  const execs = await serviceExecs(ctx, await imageManifestOf(ctx, { hash: false }));
  const oneshot = execs.find((e) => e.type === 'oneshot' && e.command?.length);
  if (oneshot) return { command: oneshot.command!, unit: oneshot.unit };
  return {
    reason: 'does not apply to a portable service without a oneshot unit: it has no init to boot, and a long-running ExecStart in exec mode would never end; ' +
      'the portable stage starts its units with portablectl (--nspawn-command runs a command of your choice)',
  };
}
