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
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withScope } from '../cleanup.js';
import { quoteDebugfsArg, runDebugfs } from '../tools/debugfs.js';
import type { Finding, Manifest } from '../types.js';
import { hostElfClass, hostElfMachine, isElf, machineName, parseElf, parseShebang, type ElfInfo } from '../boot/elf.js';
import { manifestLookup, resolvePath, type Lookup, type Resolved } from '../boot/resolve.js';
import { passedOrFailed, type Stage, imageManifestOf } from './context.js';

import { INIT_PATHS, OS_RELEASE_PATHS, notForRole } from '../boot/role.js';
import { roleOf } from './role.js';
import { skipped } from './context.js';
export { INIT_PATHS, OS_RELEASE_PATHS };
/** The order systemd-nspawn -b tries them in. */
const BOOT_ORDER = ['/usr/lib/systemd/systemd', '/lib/systemd/systemd', '/sbin/init'];
const MERGED_DIRS = ['/bin', '/sbin', '/lib', '/lib64', '/lib32', '/libx32'];
/** nspawn's PATH for a command given without a slash. */
const EXEC_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

const MULTIARCH: Record<number, string> = {
  62: 'x86_64-linux-gnu',
  3: 'i386-linux-gnu',
  183: 'aarch64-linux-gnu',
  40: 'arm-linux-gnueabihf',
  21: 'powerpc64le-linux-gnu',
  22: 's390x-linux-gnu',
  243: 'riscv64-linux-gnu',
};

// ---- reading bytes from the image ------------------------------------------

/**
 * Read whole files out of an ext4 image, rootless: one debugfs process dumps
 * all of them. `paths` must be resolved (no symlink in any component).
 * Missing paths are absent from the result.
 */
export async function readImageFiles(image: string, paths: readonly string[]): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const unique = [...new Set(paths)];
  if (!unique.length) return out;
  await withScope(async (scope) => {
    const dir = await scope.tempDir('part-image-diagnose-');
    const commands = unique.map((p, i) => `dump ${quoteDebugfsArg(p)} ${quoteDebugfsArg(join(dir, String(i)))}`);
    await runDebugfs(image, commands, { timeoutMs: 120_000 });
    await Promise.all(
      unique.map(async (p, i) => {
        const buf = await readFile(join(dir, String(i))).catch(() => undefined);
        if (buf) out.set(p, buf);
      }),
    );
  });
  return out;
}

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

/** Reads file bytes by resolved image path. */
export type FileReader = (paths: readonly string[]) => Promise<Map<string, Buffer>>;

const isExecutable = (mode?: string) => mode !== undefined && (parseInt(mode, 8) & 0o111) !== 0;

function describeFailure(r: Extract<Resolved, { ok: false }>): string {
  if (r.reason === 'dangling') return `a dangling symlink (${r.links.join(', ')}; ${r.at} does not exist)`;
  if (r.reason === 'escape') return `a symlink that climbs out of the image (${r.links.join(', ')})`;
  if (r.reason === 'loop') return `a symlink loop (${r.links.slice(0, 4).join(', ')}, ...)`;
  if (r.reason === 'not-dir') return `unreachable: ${r.message}`;
  return 'missing';
}

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

/** Look up a library name the way ld.so does; returns the candidate paths that exist, in order. */
function libraryCandidates(lookup: Lookup, name: string, dirs: readonly string[]): string[] {
  const found: string[] = [];
  for (const d of dirs) {
    const p = d === '/' ? `/${name}` : `${d.replace(/\/+$/, '')}/${name}`;
    const r = resolvePath(lookup, p);
    if (r.ok && r.entry.type === 'file' && !found.includes(r.path)) found.push(r.path);
  }
  return found;
}

function expandDst(dir: string, origin: string, elf: ElfInfo): string[] {
  const multiarch = MULTIARCH[elf.machine];
  const libs = elf.elfClass === 64 ? ['lib64', ...(multiarch ? [`lib/${multiarch}`] : []), 'lib'] : ['lib', ...(multiarch ? [`lib/${multiarch}`] : [])];
  let out = [dir.replace(/\$\{ORIGIN\}|\$ORIGIN(?![A-Za-z0-9_])/g, origin)];
  if (/\$\{?LIB\}?/.test(dir)) out = out.flatMap((d) => libs.map((l) => d.replace(/\$\{LIB\}|\$LIB(?![A-Za-z0-9_])/g, l)));
  if (/\$\{?PLATFORM\}?/.test(dir)) out = out.map((d) => d.replace(/\$\{PLATFORM\}|\$PLATFORM(?![A-Za-z0-9_])/g, machineName(elf.machine)));
  return out.filter((d) => d.startsWith('/'));
}

/** ld.so.conf(.d) directories, with `include` globs of the form DIR/*.conf expanded against the manifest. */
async function ldSoConfDirs(manifest: Manifest, lookup: Lookup, read: FileReader): Promise<string[]> {
  const dirs: string[] = [];
  const seen = new Set<string>();
  let queue = ['/etc/ld.so.conf'];
  for (let depth = 0; queue.length && depth < 4; depth++) {
    const resolved = queue
      .map((p) => resolvePath(lookup, p))
      .filter((r): r is Extract<Resolved, { ok: true }> => r.ok && r.entry.type === 'file')
      .map((r) => r.path)
      .filter((p) => !seen.has(p));
    resolved.forEach((p) => seen.add(p));
    const bytes = await read(resolved);
    const next: string[] = [];
    for (const p of resolved) {
      const text = bytes.get(p)?.toString('utf8') ?? '';
      for (const raw of text.split('\n')) {
        const line = raw.replace(/#.*/, '').trim();
        if (!line) continue;
        const inc = /^include\s+(.+)$/.exec(line);
        if (inc) {
          for (const pattern of inc[1].split(/\s+/)) next.push(...globManifest(manifest, pattern.startsWith('/') ? pattern : `/etc/${pattern}`));
          continue;
        }
        if (line.startsWith('hwcap')) continue;
        for (const d of line.split(/[:\s,]+/)) if (d.startsWith('/')) dirs.push(d);
      }
    }
    queue = next;
  }
  return dirs;
}

function globManifest(manifest: Manifest, pattern: string): string[] {
  const esc = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
  const re = new RegExp(`^${esc}$`);
  return manifest.entries
    .map((e) => e.path)
    .filter((p) => re.test(p))
    .sort();
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
    for (const p of BOOT_ORDER) {
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

/** PT_INTERP and the DT_NEEDED closure of one ELF program. */
async function checkDynamic(manifest: Manifest, lookup: Lookup, read: FileReader, program: string, elf: ElfInfo): Promise<Finding[]> {
  const findings: Finding[] = [];
  if (elf.interpreter) {
    const ir = resolvePath(lookup, elf.interpreter);
    if (!ir.ok || ir.entry.type !== 'file') {
      findings.push({
        code: 'missing-interpreter',
        path: program,
        message: `missing interpreter: ${program} needs the loader ${elf.interpreter}, which ${ir.ok ? `is a ${ir.entry.type}` : `is ${describeFailure(ir)}`} in the image; install libc6 in the root tree (or fix the usr-merge links)`,
        expected: elf.interpreter,
      });
    }
  }
  if (!elf.needed.length) return findings;

  const multiarch = MULTIARCH[elf.machine];
  const conf = await ldSoConfDirs(manifest, lookup, read);
  const defaults = [
    ...(multiarch ? [`/lib/${multiarch}`, `/usr/lib/${multiarch}`] : []),
    ...(elf.elfClass === 64 ? ['/lib64', '/usr/lib64'] : []),
    '/lib',
    '/usr/lib',
  ];
  const systemDirs = [...new Set([...conf, ...defaults])];

  interface Obj {
    path: string;
    elf: ElfInfo;
    /** DT_RPATH inherited from the objects that loaded it (ld.so searches the loaders' RPATHs). */
    inheritedRpath: string[];
  }
  interface Pending {
    name: string;
    by: Obj;
    candidates: string[];
    searched: string[];
    rejected: string[];
  }
  const loaded = new Map<string, string>(); // library name -> path that satisfied it
  const visited = new Set<string>([program]);
  const missing = new Map<string, Finding>();

  const origin = (o: Obj) => o.path.slice(0, o.path.lastIndexOf('/')) || '/';
  const searchDirs = (o: Obj): string[] => {
    const own = o.elf.runpath.length ? [] : o.elf.rpath;
    const rpath = [...own, ...(o.elf.runpath.length ? [] : o.inheritedRpath)].flatMap((d) => expandDst(d, origin(o), o.elf));
    const runpath = o.elf.runpath.flatMap((d) => expandDst(d, origin(o), o.elf));
    return [...new Set([...rpath, ...runpath, ...systemDirs])];
  };
  const pendingFor = (o: Obj): Pending[] =>
    o.elf.needed
      .filter((n) => !loaded.has(n))
      .map((name) => {
        const dirs = name.includes('/') ? ['/'] : searchDirs(o);
        const candidates = name.includes('/')
          ? [resolvePath(lookup, name.startsWith('/') ? name : `${origin(o)}/${name}`)].flatMap((r) => (r.ok && r.entry.type === 'file' ? [r.path] : []))
          : libraryCandidates(lookup, name, dirs);
        return { name, by: o, candidates, searched: dirs, rejected: [] };
      });
  let queue = pendingFor({ path: program, elf, inheritedRpath: [] });
  for (let round = 0; queue.length && round < 64; round++) {
    const want = [...new Set(queue.flatMap((p) => (p.candidates.length && !loaded.has(p.name) ? [p.candidates[0]] : [])))];
    const bytes = await read(want);
    const next: Pending[] = [];
    for (const p of queue) {
      if (loaded.has(p.name)) continue;
      const cand = p.candidates.shift();
      if (cand === undefined) {
        if (!missing.has(p.name)) {
          const rejected = p.rejected.length ? `; skipped as not ${p.by.elf.elfClass}-bit ${p.by.elf.machineName}: ${p.rejected.join(', ')}` : '';
          missing.set(p.name, {
            code: 'missing-library',
            path: p.by.path,
            message: `missing library: ${p.name}, needed by ${p.by.path}, is not in the image's library path (${p.searched.slice(0, 6).join(', ')}${p.searched.length > 6 ? ', ...' : ''})${rejected}; install the package that ships it in the root tree`,
            expected: p.name,
            actual: { searched: p.searched, rejected: p.rejected },
          });
        }
        continue;
      }
      const b = bytes.get(cand);
      let lib: ElfInfo | undefined;
      try {
        lib = b && isElf(b) ? parseElf(b) : undefined;
      } catch {
        lib = undefined;
      }
      if (!lib || lib.machine !== p.by.elf.machine || lib.elfClass !== p.by.elf.elfClass) {
        p.rejected.push(lib ? `${cand} (${lib.elfClass}-bit ${lib.machineName})` : `${cand} (not ELF)`);
        next.push(p);
        continue;
      }
      loaded.set(p.name, cand);
      if (visited.has(cand)) continue;
      visited.add(cand);
      const o: Obj = { path: cand, elf: lib, inheritedRpath: [...p.by.inheritedRpath, ...(p.by.elf.runpath.length ? [] : p.by.elf.rpath)] };
      next.push(...pendingFor(o));
    }
    queue = next;
  }
  findings.push(...missing.values());
  return findings;
}

// ---- primary cause ------------------------------------------------------------

/** Codes in the order in which one explains the others (a broken /lib explains a missing loader...). */
export const CAUSE_ORDER = [
  'broken-usr-merge',
  'no-os-release',
  'no-init',
  'command-not-found',
  'init-not-executable',
  'command-not-executable',
  'init-wrong-arch',
  'command-wrong-arch',
  'missing-interpreter',
  'missing-library',
  'no-boot-command',
  'boot-failed',
  'unit-failed',
  'emergency-mode',
  'boot-timeout',
  'default-target-not-reached',
  'command-timeout',
  'command-failed',
];

/** The one line to print first for `part-image boot`: the message of the finding that explains the rest. */
export function primaryCause(findings: readonly Finding[]): string | undefined {
  if (!findings.length) return undefined;
  const rank = (f: Finding) => {
    const i = CAUSE_ORDER.indexOf(f.code);
    return i < 0 ? CAUSE_ORDER.length : i;
  };
  let best = findings[0];
  for (const f of findings) if (rank(f) < rank(best)) best = f;
  return best.message;
}

// ---- the stage ------------------------------------------------------------------

export const diagnoseStage: Stage = {
  name: 'diagnose',
  tools: ['debugfs'],
  runs: 'rootless',
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
