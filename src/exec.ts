// The one place that spawns processes. Every host tool goes through run():
// argv arrays (never shell strings), the accepted exit codes per call, a
// missing tool turned into an install hint, and the failing command printed
// so that it can be pasted into a shell.
import { execa, type Options } from 'execa';
import { EnvironmentError, ToolError } from './errors.js';
import { packageFor } from './packages.js';
import { cancelSignal, checkNotInterrupted, trackChild } from './cleanup.js';
import { log } from './log.js';

export interface RunOptions {
  /** Exit codes that count as success. Default [0]. 'any': every exit, a signal too; the caller judges it. */
  okCodes?: number[] | 'any';
  /** Text fed to stdin. */
  input?: string;
  /** A file fed to stdin. */
  inputFile?: string;
  /** Chunks fed to stdin as the process takes them: the next one is asked for once the pipe has room. */
  inputChunks?: AsyncIterable<string>;
  env?: Record<string, string | undefined>;
  cwd?: string;
  /**
   * Called once the process has exited or could not start, before its
   * output is all read and before stdin is done: a caller that feeds
   * inputChunks for as long as the process lives ends them here (the run
   * settles only once they end).
   */
  onExit?: () => void;
  /** false: not printed under --verbose (a command repeated many times a second, whose first run was). */
  logged?: boolean;
  /** Kill the process (SIGTERM, then SIGKILL 5 s later) after this many ms. */
  timeoutMs?: number;
  /** A timeout is an answer the caller judges (result.timedOut); otherwise it throws ToolError. */
  allowTimeout?: boolean;
  /** Hint added to a ToolError when the call fails. */
  hint?: string;
  /**
   * Sees stdout and stderr as they arrive; calling `stop` ends the process the
   * way a timeout does (SIGTERM, then SIGKILL), and the result says `stopped`.
   */
  watch?: (chunk: string, stop: () => void) => void;
  /** Aborting it kills the process at once (SIGKILL), for one that no longer answers; the result says `stopped`. */
  kill?: AbortSignal;
}

export interface RunResult {
  command: string;
  exitCode: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** The `watch` callback stopped it. */
  stopped?: boolean;
}

const SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;

/** Quote one argument for a POSIX shell. */
export function shellQuote(arg: string): string {
  if (arg !== '' && SAFE.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function formatCommand(cmd: string, args: readonly string[], env?: Record<string, string | undefined>): string {
  const envPart = Object.entries(env ?? {})
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${shellQuote(v as string)} `)
    .join('');
  return envPart + [cmd, ...args].map(shellQuote).join(' ');
}

/**
 * Every tool runs in one fixed locale, whatever the user's: parsers read
 * e2fsck's, mke2fs's and qemu-img's English words, and numbers, dates and
 * sorting must not change with LANG. C.UTF-8 keeps UTF-8 names intact.
 * LANGUAGE would override the messages' language in GNU gettext: cleared.
 */
export const TOOL_LOCALE: Readonly<Record<string, string>> = { LC_ALL: 'C.UTF-8', LANGUAGE: '' };

export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  checkNotInterrupted();
  const okCodes = opts.okCodes ?? [0];
  const command = formatCommand(cmd, args, opts.env);
  const env = { ...TOOL_LOCALE, ...opts.env };
  if (opts.logged !== false) log.command(command);
  const execaOpts: Options = {
    reject: false,
    all: false,
    stripFinalNewline: false,
    env,
    extendEnv: true,
    cwd: opts.cwd,
    input: opts.input,
    inputFile: opts.inputFile,
    stdin: opts.inputChunks ?? (opts.input === undefined && opts.inputFile === undefined ? 'ignore' : undefined),
    timeout: opts.timeoutMs,
    forceKillAfterDelay: 5000,
    cancelSignal: cancelSignal(),
    maxBuffer: 1024 * 1024 * 1024,
    encoding: 'utf8',
  };
  // Tracked until it has exited: a shutdown waits for it before removing its folders.
  const child = execa(cmd, args, execaOpts);
  let stopped = false;
  if (opts.onExit) {
    // 'error' without 'exit': the process never started (the tool is missing).
    const onExit = opts.onExit;
    let called = false;
    const once = () => {
      if (!called) onExit();
      called = true;
    };
    child.once('exit', once);
    child.once('error', once);
  }
  if (opts.watch) {
    const watch = opts.watch;
    const stop = () => {
      if (stopped) return;
      stopped = true;
      child.kill('SIGTERM');
    };
    const onData = (d: Buffer | string) => watch(String(d), stop);
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
  }
  const onKill = () => {
    stopped = true;
    child.kill('SIGKILL');
  };
  if (opts.kill?.aborted) onKill();
  else opts.kill?.addEventListener('abort', onKill, { once: true });
  const result = await trackChild(child).finally(() => opts.kill?.removeEventListener('abort', onKill));
  const stdout = String(result.stdout ?? '');
  const stderr = String(result.stderr ?? '');
  if ((result as { code?: string }).code === 'ENOENT' || /ENOENT/.test(String((result as { originalMessage?: string }).originalMessage ?? ''))) {
    const pkg = packageFor(cmd);
    throw new EnvironmentError(
      `tool missing: ${cmd}`,
      pkg ? `Install it: apt-get install ${pkg}` : `Install ${cmd} and make sure it is on PATH.`,
    );
  }
  if (result.isCanceled) throw new ToolError(command, undefined, 'canceled: part-image is shutting down');
  const exitCode = result.exitCode ?? -1;
  if (result.timedOut && !opts.allowTimeout) {
    throw new ToolError(command, undefined, `timed out after ${Math.round((opts.timeoutMs ?? 0) / 1000)} s and was killed\n${stderr}`, opts.hint);
  }
  if (!result.timedOut && okCodes !== 'any' && !okCodes.includes(exitCode)) {
    throw new ToolError(command, result.exitCode, stderr || stdout, opts.hint);
  }
  return { command, exitCode, stdout, stderr, timedOut: result.timedOut ?? false, ...(stopped ? { stopped } : {}) };
}

/** True when `cmd` can be found on PATH (or is an executable path). Through run(): logged, and cancelled by a shutdown. */
export async function hasTool(cmd: string): Promise<boolean> {
  const result = await run('/bin/sh', ['-c', 'command -v "$1"', 'sh', cmd], { okCodes: 'any' });
  return result.exitCode === 0;
}
