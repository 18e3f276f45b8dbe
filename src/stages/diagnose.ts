// The diagnose stage: tell, from the image alone and rootless, why it would
// not boot, before anything boots it. Reads the manifest (debugfs) and the
// bytes of the few files that matter (init or the exec-mode command, its
// interpreter, its libraries, ld.so.conf) in a few batched debugfs runs.
//
// Findings (codes):
// - broken-usr-merge: /bin, /sbin, /lib, /lib64 (...) is a symlink that
//   dangles, or an empty real directory where the link to usr/... belongs.
// - no-os-release: neither /etc/os-release nor /usr/lib/os-release resolves.
// - no-init: none of the init paths exists (boot mode only).
// - init-not-executable / init-wrong-arch: the init is not a runnable program
//   for this host (ELF e_machine against the host's).
// - command-not-found / command-not-executable / command-wrong-arch: the same
//   for the exec-mode command (--nspawn-command), which replaces the init
//   checks when given.
// - missing-interpreter: PT_INTERP (or a script's #! interpreter) is not in the image.
// - missing-library: a DT_NEEDED library is not found the way ld.so would look
//   for it: DT_RPATH, DT_RUNPATH ($ORIGIN, $LIB expanded), ld.so.conf(.d),
//   the multiarch and default directories. Followed through the libraries'
//   own dependencies.
// - default-target-missing / default-target-masked: default.target does not
//   resolve through its aliases in any unit folder (systemd falls back to
//   rescue.target).
// - no-shell: /bin/sh does not resolve (the boot probe and most units need
//   it); shell-not-executable / shell-wrong-arch and missing-interpreter /
//   missing-library for a /bin/sh that is there but does not run.
// - unit-exec-missing: a service the default target pulls in has an
//   ExecStart= program that is not in the image (allowed units excepted).
// Warnings (the report's stage warnings, never a rejection): no-sbin-init,
// fstab-device-missing: what nspawn tolerates but a kernel boot does not.
//
// Mode: with ctx.opts.nspawnCommand the image is an exec-mode image and the
// init checks do not apply; when the user skipped the nspawn stage (--skip
// nspawn) they do not apply either, since nothing will boot it.
//
// The stage's jobs live in boot/: reading the files (read-files.ts), a
// program's checks (program.ts) with the ld.so search (ld-so.ts), what a boot
// needs from the tree (boot-needs.ts, units.ts, shell.ts), and the cause
// ranking (cause.ts).
import type { Finding, Manifest } from '../types.js';
import { hostElfClass, hostElfMachine } from '../boot/elf.js';
import { manifestLookup, resolvePath } from '../boot/resolve.js';
import { readImageFiles, type FileReader } from '../boot/read-files.js';
import { checkProgram, type ProgramRole } from '../boot/program.js';
import { NSPAWN_INIT_PATHS, hasSystemdInit } from '../boot/probe-files.js';
import { describeFailure } from '../boot/unresolved.js';
import { checkDefaultTarget, checkUnitExecs, checkUsrMerge, fstabWarnings, sbinInitWarning } from '../boot/boot-needs.js';
import { shellProblem, SHELL } from '../boot/shell.js';
import { isAllowed } from '../boot/probe.js';
import { readSuperblock } from '../tools/dumpe2fs.js';
import { passedOrFailed, skipped, type Stage, imageManifestOf } from './context.js';
import { OPTION } from './options.js';

import { INIT_PATHS, OS_RELEASE_PATHS, notForRole } from '../boot/role.js';
import { roleOf } from './role.js';
export { INIT_PATHS, OS_RELEASE_PATHS };
/** nspawn's PATH for a command given without a slash. */
const EXEC_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

// ---- the diagnosis ---------------------------------------------------------

export interface DiagnoseOptions {
  /** Exec-mode command (argv); replaces the init checks. */
  command?: readonly string[];
  /** Check the init (default true unless `command` is given). */
  checkInit?: boolean;
  /** e_machine of the host (default: this process's architecture). */
  hostMachine?: number;
  hostClass?: 32 | 64;
  /** Units allowed to fail (--allow-failed-unit): their ExecStart= is not checked. */
  allowFailedUnits?: readonly string[];
  /** The image's own filesystem, for the fstab warnings. */
  self?: { uuid?: string; label?: string };
}

function checkOsRelease(lookup: ReturnType<typeof manifestLookup>): Finding[] {
  const tried: string[] = [];
  for (const p of OS_RELEASE_PATHS) {
    const r = resolvePath(lookup, p);
    if (r.ok && r.entry.type === 'file') return [];
    if (!r.ok && r.reason !== 'missing') tried.push(`${p} is ${describeFailure(r)}`);
    else if (r.ok) tried.push(`${p} is a ${r.entry.type}`);
  }
  const detail = tried.length ? ` (${tried.join('; ')})` : '';
  return [
    {
      code: 'no-os-release',
      path: '/etc/os-release',
      message: `no os-release: neither /etc/os-release nor /usr/lib/os-release exists in the image${detail}; systemd-nspawn and portablectl refuse such an image; add one to the root tree (Debian: the base-files package)`,
    },
  ];
}

const INIT_ROLE: ProgramRole = { name: 'init', fix: 'reinstall systemd in the root tree' };
const COMMAND_ROLE: ProgramRole = { name: 'command', fix: 'fix the file or --nspawn-command' };
const SHELL_ROLE: ProgramRole = { name: 'shell', fix: 'reinstall the shell /bin/sh points to (Debian: dash)' };

export interface DiagnoseResult {
  findings: Finding[];
  /** What nspawn tolerates but a kernel boot would not: reported, never a rejection. */
  warnings: Finding[];
  details: Record<string, unknown>;
}

/**
 * Diagnose a tree (manifest + a reader of file bytes). The pure core of the
 * stage: the stage wires it to an image, tests can wire it to anything.
 */
export async function diagnoseTree(manifest: Manifest, read: FileReader, opts: DiagnoseOptions = {}): Promise<DiagnoseResult> {
  const lookup = manifestLookup(manifest);
  const host = { machine: opts.hostMachine ?? hostElfMachine(), elfClass: opts.hostClass ?? hostElfClass() };
  const findings: Finding[] = [...checkUsrMerge(manifest, lookup), ...checkOsRelease(lookup)];
  const warnings: Finding[] = [];
  const details: Record<string, unknown> = {};
  const done = () => ({ findings, warnings, details });

  if (opts.command?.length) {
    const cmd = opts.command[0];
    details.mode = 'exec';
    const candidates = cmd.includes('/') ? [cmd.startsWith('/') ? cmd : `/${cmd}`] : EXEC_PATH.map((d) => `${d}/${cmd}`);
    const start = candidates.find((p) => {
      const r = resolvePath(lookup, p);
      return r.ok && r.entry.type === 'file';
    });
    if (!start) {
      const r = resolvePath(lookup, candidates[0]);
      const why = !r.ok && r.reason !== 'missing' ? ` (${candidates[0]} is ${describeFailure(r)})` : '';
      findings.push({
        code: 'command-not-found',
        path: cmd,
        message: `command not found: ${cmd} is not in the image${cmd.includes('/') ? '' : ` (searched ${EXEC_PATH.join(':')})`}${why}; add it to the root tree or fix --nspawn-command`,
      });
      return done();
    }
    const p = await checkProgram(manifest, lookup, read, start, COMMAND_ROLE, host);
    findings.push(...p.findings);
    if (p.resolved) details.command = p.resolved;
    if (p.machine) details.machine = p.machine;
    return done();
  }
  if (!(opts.checkInit ?? true)) {
    details.mode = 'none';
    return done();
  }

  details.mode = 'boot';
  const tried: string[] = [];
  let start: string | undefined;
  for (const p of NSPAWN_INIT_PATHS) {
    const r = resolvePath(lookup, p);
    if (r.ok) {
      start = p;
      break;
    }
    if (r.reason !== 'missing') tried.push(`${p} is ${describeFailure(r)}`);
  }
  if (!start) {
    findings.push({
      code: 'no-init',
      path: '/sbin/init',
      message: `no init: none of ${INIT_PATHS.join(', ')} exists in the image${tried.length ? ` (${tried.join('; ')})` : ''}; install systemd-sysv in the root tree, pass --nspawn-command for an image without init, or --skip diagnose,nspawn for an image that is never booted`,
    });
    return done();
  }
  const init = await checkProgram(manifest, lookup, read, start, INIT_ROLE, host);
  findings.push(...init.findings);
  if (init.resolved) details.init = init.resolved;
  if (init.machine) details.machine = init.machine;
  if (!hasSystemdInit(lookup)) return done();

  // A systemd boot: what it needs before the first unit starts.
  findings.push(...checkDefaultTarget(lookup));
  const sh = shellProblem(lookup);
  if (sh) findings.push(sh);
  else {
    const p = await checkProgram(manifest, lookup, read, SHELL, SHELL_ROLE, host);
    // The loader and libc are the init's too: name them once, for the init.
    findings.push(...p.findings.filter((f) => !findings.some((g) => g.code === f.code && g.expected === f.expected)));
    if (p.resolved) details.shell = p.resolved;
  }
  const execs = await checkUnitExecs(manifest, lookup, read, (u) => isAllowed(u, opts.allowFailedUnits ?? []));
  findings.push(...execs.findings);
  details.unitsChecked = execs.units;

  warnings.push(...sbinInitWarning(lookup));
  const fstab = resolvePath(lookup, '/etc/fstab');
  if (fstab.ok && fstab.entry.type === 'file') {
    const text = (await read([fstab.path])).get(fstab.path)?.toString('utf8') ?? '';
    warnings.push(...fstabWarnings(text, opts.self ?? {}));
  }
  return done();
}

// ---- the stage ------------------------------------------------------------------

export const diagnoseStage: Stage = {
  name: 'diagnose',
  tools: ['debugfs', 'dumpe2fs'],
  runs: 'rootless',
  // --skip nspawn leaves out the init checks.
  options: {
    type: 'object',
    properties: { nspawnCommand: OPTION.nspawnCommand, skip: OPTION.skip, allowFailedUnits: { type: 'array', items: { type: 'string' } } },
    required: ['skip'],
    additionalProperties: false,
  },
  summary: 'rootless boot diagnosis from the image: os-release, init, ELF machine, loader and libraries, usr-merge paths, default.target, /bin/sh, the boot units\' ExecStart=',
  async run(ctx) {
    const role = await roleOf(ctx);
    if (role.role === 'data') return { ...skipped(notForRole(role, 'diagnose'), 'not-applicable'), details: { role: role.role } };
    if (role.role === 'portable' && !ctx.opts.nspawnCommand) return (await import('./portable-exec.js')).diagnosePortable(ctx, role.why);
    const manifest = await imageManifestOf(ctx, { hash: false });
    // With --skip nspawn the image may be one that never boots (a portable
    // service, a data partition): its init is checked only when it has one.
    const lookup = manifestLookup(manifest);
    const hasInit = INIT_PATHS.some((p) => { const r = resolvePath(lookup, p); return r.ok || r.reason !== 'missing'; });
    const sb = await readSuperblock(ctx.image);
    const { findings, warnings, details } = await diagnoseTree(manifest, (paths) => readImageFiles(ctx.image, paths), {
      command: ctx.opts.nspawnCommand,
      checkInit: !ctx.opts.skip.has('nspawn') || hasInit,
      allowFailedUnits: ctx.opts.allowFailedUnits,
      self: { uuid: sb.uuid, label: sb.label },
    });
    return { ...passedOrFailed(findings, details), ...(warnings.length ? { warnings } : {}) };
  },
};
