// The diagnose stage: tell, from the image alone and rootless, why it would
// not boot, before anything boots it. Reads the manifest (debugfs) and the
// bytes of the few files that matter (init or the exec-mode command, its
// interpreter, its libraries, ld.so.conf) in a few batched debugfs runs.
//
// Findings (codes):
// - broken-usr-merge: /bin, /sbin, /lib, /lib64 (...) is a symlink that dangles.
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
//
// Mode: with ctx.opts.nspawnCommand the image is an exec-mode image and the
// init checks do not apply; when the user skipped the nspawn stage (--skip
// nspawn) they do not apply either, since nothing will boot it.
//
// The stage's jobs live in boot/: reading the files (read-files.ts), the
// ld.so search (ld-so.ts), and the cause ranking (cause.ts).
import type { Finding, Manifest } from '../types.js';
import { hostElfClass, hostElfMachine, isElf, machineName, parseElf, parseShebang, type ElfInfo } from '../boot/elf.js';
import { manifestLookup, resolvePath, type Lookup } from '../boot/resolve.js';
import { readImageFiles, type FileReader } from '../boot/read-files.js';
import { checkDynamic } from '../boot/ld-so.js';
import { NSPAWN_INIT_PATHS } from '../boot/probe-files.js';
import { describeFailure } from '../boot/unresolved.js';
import { passedOrFailed, skipped, type Stage, imageManifestOf } from './context.js';
import { OPTION } from './options.js';
import { INIT_PATHS, OS_RELEASE_PATHS, notForRole } from '../boot/role.js';
import { roleOf } from './role.js';
export { INIT_PATHS, OS_RELEASE_PATHS };
const MERGED_DIRS = ['/bin', '/sbin', '/lib', '/lib64', '/lib32', '/libx32'];
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
}

const isExecutable = (mode?: string) => mode !== undefined && (parseInt(mode, 8) & 0o111) !== 0;

function checkUsrMerge(lookup: Lookup): Finding[] {
  const findings: Finding[] = [];
  for (const dir of MERGED_DIRS) {
    const e = lookup(dir);
    if (!e || e.type !== 'symlink') continue;
    const r = resolvePath(lookup, dir);
    if (r.ok && r.entry.type === 'dir') continue;
    const why = r.ok ? `it points to a ${r.entry.type}, not a directory` : `${r.at} does not exist`;
    findings.push({
      code: 'broken-usr-merge',
      path: dir,
      message: `broken usr-merge: ${dir} -> ${e.target} dangles (${why}); every program under ${dir} is unreachable; fix the link or add the directory it points to in the root tree`,
      expected: 'a symlink to an existing directory',
      actual: e.target,
    });
  }
  return findings;
}

function checkOsRelease(lookup: Lookup): Finding[] {
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

interface Role {
  /** 'init' or 'command': the prefix of the codes. */
  name: 'init' | 'command';
  label: string;
}

export interface DiagnoseResult {
  findings: Finding[];
  details: Record<string, unknown>;
}

/**
 * Diagnose a tree (manifest + a reader of file bytes). The pure core of the
 * stage: the stage wires it to an image, tests can wire it to anything.
 */
export async function diagnoseTree(manifest: Manifest, read: FileReader, opts: DiagnoseOptions = {}): Promise<DiagnoseResult> {
  const lookup = manifestLookup(manifest);
  const hostMachine = opts.hostMachine ?? hostElfMachine();
  const hostClass = opts.hostClass ?? hostElfClass();
  const findings: Finding[] = [...checkUsrMerge(lookup), ...checkOsRelease(lookup)];
  const details: Record<string, unknown> = {};

  let role: Role;
  let start: string | undefined;
  if (opts.command?.length) {
    role = { name: 'command', label: 'the command' };
    const cmd = opts.command[0];
    details.mode = 'exec';
    const candidates = cmd.includes('/') ? [cmd.startsWith('/') ? cmd : `/${cmd}`] : EXEC_PATH.map((d) => `${d}/${cmd}`);
    start = candidates.find((p) => {
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
    }
  } else if (opts.checkInit ?? true) {
    role = { name: 'init', label: 'the init' };
    details.mode = 'boot';
    const tried: string[] = [];
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
    }
  } else {
    details.mode = 'none';
    return { findings, details };
  }
  if (!start) return { findings, details };

  // The program itself.
  const r = resolvePath(lookup, start);
  if (!r.ok) return { findings, details };
  details[role.name] = r.path === start ? start : `${start} -> ${r.path}`;
  const notExec = (why: string) =>
    findings.push({
      code: `${role.name}-not-executable`,
      path: start,
      message: `${role.name} not executable: ${start}${r.path !== start ? ` (${r.path})` : ''} ${why}; ${role.name === 'init' ? 'reinstall systemd in the root tree' : 'fix the file or --nspawn-command'}`,
      actual: r.entry.mode,
    });
  if (r.entry.type !== 'file') {
    notExec(`is a ${r.entry.type}, not a program`);
    return { findings, details };
  }
  if (!isExecutable(r.entry.mode)) {
    notExec(`has mode ${r.entry.mode} with no execute bit`);
  }

  // Follow #! scripts (one level), then the ELF checks.
  const bytes = await read([r.path]);
  let program = r.path;
  let buf = bytes.get(program);
  if (!buf) return { findings, details };
  const shebang = parseShebang(buf);
  if (shebang) {
    const ir = resolvePath(lookup, shebang.interpreter);
    if (!ir.ok || ir.entry.type !== 'file') {
      findings.push({
        code: 'missing-interpreter',
        path: program,
        message: `missing interpreter: ${program} is a script for ${shebang.interpreter}, which ${ir.ok ? `is a ${ir.entry.type}` : `is ${describeFailure(ir)}`} in the image; install it in the root tree`,
        expected: shebang.interpreter,
      });
      return { findings, details };
    }
    program = ir.path;
    buf = (await read([program])).get(program);
    if (!buf) return { findings, details };
  }
  if (!isElf(buf)) {
    notExec(`is neither an ELF program nor a #! script (starts with ${JSON.stringify(buf.subarray(0, 8).toString('latin1'))})`);
    return { findings, details };
  }
  let elf: ElfInfo;
  try {
    elf = parseElf(buf);
  } catch (err) {
    notExec(`is a damaged ELF file: ${(err as Error).message}`);
    return { findings, details };
  }
  details.machine = elf.machineName;
  if (elf.machine !== hostMachine || elf.elfClass !== hostClass) {
    findings.push({
      code: `${role.name}-wrong-arch`,
      path: program,
      message: `${role.name} built for the wrong architecture: ${program} is ${elf.elfClass}-bit ${elf.machineName} (e_machine ${elf.machine}), this host runs ${hostClass}-bit ${machineName(hostMachine)} (e_machine ${hostMachine}); build the root tree for ${machineName(hostMachine)}`,
      expected: { machine: hostMachine, name: machineName(hostMachine), class: hostClass },
      actual: { machine: elf.machine, name: elf.machineName, class: elf.elfClass },
    });
    return { findings, details };
  }
  findings.push(...(await checkDynamic(manifest, lookup, read, program, elf)));
  return { findings, details };
}

// ---- the stage ------------------------------------------------------------------

export const diagnoseStage: Stage = {
  name: 'diagnose',
  tools: ['debugfs'],
  runs: 'rootless',
  // --skip nspawn leaves out the init checks.
  options: { type: 'object', properties: { nspawnCommand: OPTION.nspawnCommand, skip: OPTION.skip }, required: ['skip'], additionalProperties: false },
  summary: 'rootless boot diagnosis from the image: os-release, init, ELF machine, loader and libraries, usr-merge links',
  async run(ctx) {
    const role = await roleOf(ctx);
    if (role.role === 'data') return { ...skipped(notForRole(role, 'diagnose'), 'not-applicable'), details: { role: role.role } };
    if (role.role === 'portable' && !ctx.opts.nspawnCommand) return (await import('./portable-exec.js')).diagnosePortable(ctx, role.why);
    const manifest = await imageManifestOf(ctx, { hash: false });
    // With --skip nspawn the image may be one that never boots (a portable
    // service, a data partition): its init is checked only when it has one.
    const lookup = manifestLookup(manifest);
    const hasInit = INIT_PATHS.some((p) => { const r = resolvePath(lookup, p); return r.ok || r.reason !== 'missing'; });
    const { findings, details } = await diagnoseTree(manifest, (paths) => readImageFiles(ctx.image, paths), {
      command: ctx.opts.nspawnCommand,
      checkInit: !ctx.opts.skip.has('nspawn') || hasInit,
    });
    return passedOrFailed(findings, details);
  },
};
