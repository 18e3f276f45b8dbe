// Is a program in an image one this host can run? The file itself (a regular
// file with an execute bit), a #! script's interpreter (one level), the ELF
// machine and class against the host's, then the loader and every DT_NEEDED
// library the way ld.so would find them (ld-so.ts). Used for the init, the
// exec-mode command, /bin/sh and the units' ExecStart binaries.
import type { Finding, Manifest } from '../types.js';
import { isElf, machineName, parseElf, parseShebang, type ElfInfo } from './elf.js';
import { resolvePath, type Lookup } from './resolve.js';
import type { FileReader } from './read-files.js';
import { checkDynamic } from './ld-so.js';
import { describeFailure } from './unresolved.js';

export interface ProgramRole {
  /** The prefix of the codes: init-not-executable, shell-wrong-arch, ... */
  name: string;
  /** What to do about a program that does not run. */
  fix: string;
}

export interface Host {
  machine: number;
  elfClass: 32 | 64;
}

export const isExecutable = (mode?: string) => mode !== undefined && (parseInt(mode, 8) & 0o111) !== 0;

/**
 * Check the program at `start` (which resolves in the image). Returns the
 * findings and the resolved path and machine for the details.
 */
export async function checkProgram(
  manifest: Manifest,
  lookup: Lookup,
  read: FileReader,
  start: string,
  role: ProgramRole,
  host: Host,
): Promise<{ findings: Finding[]; resolved?: string; machine?: string }> {
  const findings: Finding[] = [];
  const r = resolvePath(lookup, start);
  if (!r.ok) return { findings };
  const resolved = r.path === start ? start : `${start} -> ${r.path}`;
  const notExec = (why: string) =>
    findings.push({
      code: `${role.name}-not-executable`,
      path: start,
      message: `${role.name} not executable: ${start}${r.path !== start ? ` (${r.path})` : ''} ${why}; ${role.fix}`,
      actual: r.entry.mode,
    });
  if (r.entry.type !== 'file') {
    notExec(`is a ${r.entry.type}, not a program`);
    return { findings, resolved };
  }
  if (!isExecutable(r.entry.mode)) notExec(`has mode ${r.entry.mode} with no execute bit`);

  let program = r.path;
  let buf = (await read([program])).get(program);
  if (!buf) return { findings, resolved };
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
      return { findings, resolved };
    }
    program = ir.path;
    buf = (await read([program])).get(program);
    if (!buf) return { findings, resolved };
  }
  if (!isElf(buf)) {
    notExec(`is neither an ELF program nor a #! script (starts with ${JSON.stringify(buf.subarray(0, 8).toString('latin1'))})`);
    return { findings, resolved };
  }
  let elf: ElfInfo;
  try {
    elf = parseElf(buf);
  } catch (err) {
    notExec(`is a damaged ELF file: ${(err as Error).message}`);
    return { findings, resolved };
  }
  if (elf.machine !== host.machine || elf.elfClass !== host.elfClass) {
    findings.push({
      code: `${role.name}-wrong-arch`,
      path: program,
      message: `${role.name} built for the wrong architecture: ${program} is ${elf.elfClass}-bit ${elf.machineName} (e_machine ${elf.machine}), this host runs ${host.elfClass}-bit ${machineName(host.machine)} (e_machine ${host.machine}); build the root tree for ${machineName(host.machine)}`,
      expected: { machine: host.machine, name: machineName(host.machine), class: host.elfClass },
      actual: { machine: elf.machine, name: elf.machineName, class: elf.elfClass },
    });
    return { findings, resolved, machine: elf.machineName };
  }
  findings.push(...(await checkDynamic(manifest, lookup, read, program, elf)));
  return { findings, resolved, machine: elf.machineName };
}
