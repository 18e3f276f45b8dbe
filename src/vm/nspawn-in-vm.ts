// systemd-nspawn inside the boot VM, for hosts where it cannot run (not
// root, no systemd-container). In the VM systemd is PID 1 and udev runs, so
// nspawn takes the image itself (--image=, the real dissect/udev path) from
// a read-only SCSI disk instead of a loop-mounted directory.
//
// The host directory of the probe files is bound writable in the VM: the
// boot probe leaves its report there as a file too (`report`), which comes
// back with the job's files. The console alone lost it now and then: when
// the container powers off right after printing, nspawn can exit before it
// has copied the last of the container's console to its stdout.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Scope } from '../cleanup.js';
import { shellQuote } from '../exec.js';
import { GUEST_JOB_FILES, guestDisk, runVm, vmFailure, type VmResult } from './run.js';

export const NSPAWN_VM_DISK = guestDisk('pi-img-0');

export interface NspawnInVmOptions {
  /** Host path of the raw image. */
  image: string;
  /** systemd-nspawn's arguments as on the host (e.g. buildNspawnArgs()); a --directory=/-D is replaced by --image=<the VM disk>. */
  args: readonly string[];
  /** A flat host directory the arguments refer to (the probe files): copied into the VM, and its path in the arguments rewritten. */
  hostDir?: string;
  /** nspawn's own time limit; the VM gets its boot on top. */
  timeoutMs: number;
  scope: Scope;
}

export interface NspawnInVmResult {
  /** nspawn's exit status (124: killed at timeoutMs); undefined when the VM did not deliver it. */
  exitCode?: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Why the VM failed, when it did. */
  vmError?: string;
  vm: VmResult;
}

/** The file the boot probe writes its report to, in its directory. */
export const PROBE_REPORT = 'report';

/**
 * The nspawn argv for the VM: --image on the VM's disk, host paths under
 * hostDir moved to the guest's copy, and a read-only bind of hostDir itself
 * made writable (the probe writes its report there). Pure.
 */
export function nspawnArgsForVm(args: readonly string[], hostDir?: string): string[] {
  const out = [`--image=${NSPAWN_VM_DISK}`];
  const dir = hostDir?.replace(/\/+$/, '');
  // The directory itself, followed by "/", ":" (bind specs) or the end.
  const hostPath = dir ? new RegExp(`${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?=/|:|$)`, 'g') : undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a.startsWith('--directory=')) continue;
    if (a === '-D' || a === '--directory') {
      i++;
      continue;
    }
    const moved = hostPath ? a.replace(hostPath, GUEST_JOB_FILES) : a;
    out.push(dir && a.startsWith(`--bind-ro=${dir}:`) ? moved.replace(/^--bind-ro=/, '--bind=') : moved);
  }
  return out;
}

export async function runNspawnInVm(o: NspawnInVmOptions): Promise<NspawnInVmResult> {
  const files: Record<string, Buffer> = {};
  if (o.hostDir) {
    for (const name of await readdir(o.hostDir)) {
      const p = join(o.hostDir, name);
      if (!(await stat(p)).isFile()) throw new Error(`runNspawnInVm: ${p} is not a regular file; hostDir must be flat`);
      files[name] = await readFile(p);
    }
  }
  const seconds = Math.max(1, Math.ceil(o.timeoutMs / 1000));
  const argv = ['systemd-nspawn', ...nspawnArgsForVm(o.args, o.hostDir)].map(shellQuote).join(' ');
  const script = [
    'export SYSTEMD_COLORS=0 SYSTEMD_LOG_COLOR=0 SYSTEMD_PAGER=',
    `timeout -k 5 ${seconds} ${argv} < /dev/null > "$PI_OUT/stdout" 2> "$PI_OUT/stderr"`,
    'echo $? > "$PI_OUT/rc"',
    `[ -f "${GUEST_JOB_FILES}/${PROBE_REPORT}" ] && cp "${GUEST_JOB_FILES}/${PROBE_REPORT}" "$PI_OUT/probe-report"`,
    '',
  ].join('\n');
  const vmTimeoutMs = o.timeoutMs + 180_000;
  const vm = await runVm({
    script,
    files,
    disks: [{ path: o.image, serial: 'pi-img-0' }],
    timeoutMs: vmTimeoutMs,
    jobTimeoutMs: o.timeoutMs + 30_000,
    scope: o.scope,
  });
  const rc = vm.files.get('rc')?.toString().trim();
  const exitCode = rc && /^\d+$/.test(rc) ? Number(rc) : undefined;
  return {
    exitCode,
    stdout: withProbeReport(vm.files.get('stdout')?.toString('utf8') ?? '', vm.files.get('probe-report')?.toString('utf8')),
    stderr: vm.files.get('stderr')?.toString('utf8') ?? '',
    timedOut: exitCode === 124,
    vmError: exitCode === undefined ? (vmFailure(vm, vmTimeoutMs) ?? `the VM job ended (exit ${vm.exitCode}) without nspawn's exit status`) : undefined,
    vm,
  };
}

/**
 * nspawn's stdout, with the probe's report file after it when the console
 * did not carry the report to its end. The judge reads the last complete
 * report. Pure.
 */
export function withProbeReport(stdout: string, report: string | undefined, endMark = 'PART-IMAGE-PROBE end'): string {
  if (!report || !report.includes(endMark)) return stdout;
  const lines = stdout.split('\n').map((l) => l.replace(/\r$/, ''));
  if (lines.some((l) => l.endsWith(endMark))) return stdout;
  return `${stdout}${stdout === '' || stdout.endsWith('\n') ? '' : '\n'}${report}`;
}
