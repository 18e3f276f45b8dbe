// systemd-nspawn, the way it works on a host without systemd as PID 1, udev or
// a system bus: a directory (-D, the loop-mounted
// image; --image needs udev), no registration, no resolv.conf or timezone
// binds, a volatile overlay so that the image is never written, a private
// network so that the guest cannot touch the host's interfaces, and
// SIGKILL as the kill signal so that a timeout ends the container at once.
import { run, type RunOptions, type RunResult } from '../exec.js';
import { UsageError } from '../errors.js';

export interface BindMount {
  host: string;
  container: string;
}

export interface NspawnOptions {
  /** The container's root directory (a read-only mount of the image). */
  directory: string;
  /** Machine name: also the container's hostname and the key of nspawn's /run state; unique per run. */
  machine: string;
  /** boot: run the image's init (-b); exec: run `command` as the container's first process. */
  mode: 'boot' | 'exec';
  /** exec mode: argv inside the container. */
  command?: readonly string[];
  /** boot mode: arguments handed to the image's init (e.g. systemd.wants=UNIT). */
  initArgs?: readonly string[];
  /** Read-only bind mounts from the host into the container. */
  bindRo?: readonly BindMount[];
  /** Give the container only a loopback interface (default true). */
  privateNetwork?: boolean;
}


function checkBindPath(p: string): string {
  if (p.includes(':')) throw new UsageError(`bind path must not contain ':': ${p}`);
  return p;
}

/** The argv (after `systemd-nspawn`) for one run. */
export function buildNspawnArgs(o: NspawnOptions): string[] {
  const args = [
    '--quiet',
    `--directory=${o.directory}`,
    `--machine=${o.machine}`,
    '--register=no',
    '--keep-unit',
    '--resolv-conf=off',
    '--timezone=off',
    '--volatile=overlay',
    '--link-journal=no',
    '--kill-signal=SIGKILL',
  ];
  if (o.privateNetwork ?? true) args.push('--private-network');
  for (const b of o.bindRo ?? []) args.push(`--bind-ro=${checkBindPath(b.host)}:${checkBindPath(b.container)}`);
  if (o.mode === 'boot') {
    // read-only: a pseudo TTY as /dev/console whose output is copied to our stdout.
    args.push('--console=read-only', '--boot');
    if (o.initArgs?.length) args.push(...o.initArgs);
  } else {
    if (!o.command?.length) throw new UsageError('nspawn exec mode needs a command');
    // pipe: the command's stdout/stderr are ours and its exit status is nspawn's.
    args.push('--console=pipe', '--', ...o.command);
  }
  return args;
}

/**
 * Run systemd-nspawn. Every exit status is returned, not thrown: the caller
 * judges it. After `timeoutMs` nspawn gets SIGTERM, which (with
 * --kill-signal=SIGKILL) kills the whole container; `timedOut` is then true
 * and stdout holds what was printed until then. `watch` sees the console as
 * it comes and may end the boot early (result.stopped).
 */
export async function runNspawn(o: NspawnOptions, timeoutMs: number, watch?: RunOptions['watch']): Promise<RunResult> {
  return run('systemd-nspawn', buildNspawnArgs(o), {
    okCodes: 'any',
    timeoutMs,
    allowTimeout: true,
    watch,
    env: { SYSTEMD_COLORS: '0', SYSTEMD_LOG_COLOR: '0', SYSTEMD_PAGER: '' },
  });
}

/** nspawn's harmless farewell line, and other noise to drop from reported output. */
export function isNspawnNoise(line: string): boolean {
  return /^Attempted to remove disk file system under "\/run\/systemd\/nspawn\/propagate\//.test(line);
}

/** A machine name that is unique per process and run, and a valid hostname. */
export function machineName(prefix = 'part-image'): string {
  const rand = Math.random().toString(36).slice(2, 8);
  return `${prefix}-${process.pid}-${rand}`.slice(0, 60);
}
