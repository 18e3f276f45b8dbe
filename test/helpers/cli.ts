// Runs the CLI as a user would. runCli calls main() in this process, so that
// its coverage counts; runCliProcess spawns the built bin (npm test builds
// dist/ first) for what only a real process shows: signals, the process's own
// exit code, per-process state (the stale sweep runs once per folder and
// process, the KVM verdict is kept in memory), other users.
import { fileURLToPath } from 'node:url';
import { execa, type Options } from 'execa';
import { log } from '../../src/log.js';

export const CLI = fileURLToPath(new URL('../../dist/bin.js', import.meta.url));

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface InProcessOptions {
  /** Set (or, with undefined, unset) in process.env for the run, restored afterwards. */
  env?: Record<string, string | undefined>;
  /** process.chdir() for the run, restored afterwards. */
  cwd?: string;
  /** As execa's: strip one final newline from stdout and stderr (default true). */
  stripFinalNewline?: boolean;
}

const stripOne = (s: string) => s.replace(/\r?\n$/, '');

type Write = typeof process.stdout.write;
type Stream = typeof process.stdout | typeof process.stderr;

/** As in a child with piped output: no TTY, whatever the test runner's streams are. Returns the undo. */
function notATty(stream: Stream): () => void {
  const own = Object.getOwnPropertyDescriptor(stream, 'isTTY');
  Object.defineProperty(stream, 'isTTY', { value: false, configurable: true, writable: true });
  return () => {
    if (own) Object.defineProperty(stream, 'isTTY', own);
    else delete (stream as { isTTY?: boolean }).isTTY;
  };
}

/** A write() that collects text instead; it calls the callback as a stream would. */
function collector(into: string[]): Write {
  return ((chunk: string | Uint8Array, encoding?: BufferEncoding | ((err?: Error | null) => void), cb?: (err?: Error | null) => void) => {
    into.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString(typeof encoding === 'string' ? encoding : 'utf8'));
    const done = typeof encoding === 'function' ? encoding : cb;
    if (done) queueMicrotask(() => done(null));
    return true;
  }) as Write;
}

// One run at a time: stdout, stderr, env, cwd and the log level are process-wide.
let queue: Promise<unknown> = Promise.resolve();

/**
 * PART_IMAGE_TEST_CLI=process runs every runCli as a child process instead:
 * to compare the two, and how the coverage before the in-process switch was measured.
 */
export function runCli(args: string[], opts: InProcessOptions = {}): Promise<CliResult> {
  if (process.env.PART_IMAGE_TEST_CLI === 'process') return runCliProcess(args, opts as Options);
  const next = queue.then(() => runInProcess(args, opts));
  queue = next.catch(() => undefined);
  return next;
}

async function runInProcess(args: string[], opts: InProcessOptions): Promise<CliResult> {
  const out: string[] = [];
  const err: string[] = [];
  const saved = {
    stdout: process.stdout.write,
    stderr: process.stderr.write,
    exitCode: process.exitCode,
    verbosity: log.verbosity,
    cwd: process.cwd(),
    env: Object.keys(opts.env ?? {}).map((k) => [k, process.env[k]] as const),
  };
  const { main } = await import('../../src/cli.js');
  const ttys: (() => void)[] = [];
  let exitCode: number;
  try {
    for (const [k, v] of Object.entries(opts.env ?? {})) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    if (opts.cwd) process.chdir(opts.cwd);
    ttys.push(notATty(process.stdout), notATty(process.stderr));
    process.stdout.write = collector(out);
    process.stderr.write = collector(err);
    exitCode = await main(args);
  } finally {
    for (const undo of ttys) undo();
    process.stdout.write = saved.stdout;
    process.stderr.write = saved.stderr;
    process.exitCode = saved.exitCode;
    log.setVerbosity(saved.verbosity);
    process.chdir(saved.cwd);
    for (const [k, v] of saved.env) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
  const strip = opts.stripFinalNewline ?? true;
  const text = (parts: string[]) => (strip ? stripOne(parts.join('')) : parts.join(''));
  return { exitCode, stdout: text(out), stderr: text(err) };
}

/** The built bin as a child process (its V8 coverage counts through NODE_V8_COVERAGE, see vitest.config.ts). */
export async function runCliProcess(args: string[], opts: Options = {}): Promise<CliResult> {
  const r = await execa('node', [CLI, ...args], { reject: false, ...opts, env: { ...process.env, ...(opts.env ?? {}) } });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}
