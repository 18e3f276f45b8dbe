// Releases temporary files, mounts and loop devices on success, failure and
// SIGINT/SIGTERM. Library code registers disposers in a Scope; cli.ts installs
// the signal handlers that run every live scope and then exits 130.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

type Disposer = () => Promise<void> | void;

const liveScopes = new Set<Scope>();
let controller = new AbortController();
let shuttingDown = false;

/** True once an interrupt started the shutdown: work still running should stop, not report. */
export function isShuttingDown(): boolean {
  return shuttingDown;
}

/** Aborted when part-image is interrupted; exec.ts hands it to every child. */
export function cancelSignal(): AbortSignal {
  return controller.signal;
}

export class Scope {
  private disposers: { label: string; fn: Disposer }[] = [];
  private closed = false;

  constructor() {
    liveScopes.add(this);
  }

  /** Run `fn` when the scope closes, in reverse order of registration. */
  defer(label: string, fn: Disposer): void {
    this.disposers.push({ label, fn });
  }

  /** A temporary directory removed when the scope closes. */
  async tempDir(prefix = 'part-image-', parent = tmpdir()): Promise<string> {
    const dir = await mkdtemp(join(parent, prefix));
    // Retries: on an interrupt, a reader may still be writing into it for a moment.
    this.defer(`remove ${dir}`, () => rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 }));
    return dir;
  }

  async close(): Promise<string[]> {
    if (this.closed) return [];
    this.closed = true;
    liveScopes.delete(this);
    const errors: string[] = [];
    for (const { label, fn } of this.disposers.reverse()) {
      try {
        await fn();
      } catch (err) {
        errors.push(`${label}: ${(err as Error).message}`);
      }
    }
    return errors;
  }
}

/** Run `fn` with a scope that is always closed afterwards. */
export async function withScope<T>(fn: (scope: Scope) => Promise<T>): Promise<T> {
  const scope = new Scope();
  try {
    return await fn(scope);
  } finally {
    const errors = await scope.close();
    for (const e of errors) process.stderr.write(`warning: cleanup: ${e}\n`);
  }
}

/** Abort running children, then close every live scope. Used by the CLI's signal handler. */
export async function shutdown(): Promise<void> {
  shuttingDown = true;
  controller.abort();
  // Disposers run commands (umount, losetup -d): they must not inherit the aborted signal.
  controller = new AbortController();
  const scopes = [...liveScopes].reverse();
  for (const scope of scopes) {
    const errors = await scope.close();
    for (const e of errors) process.stderr.write(`warning: cleanup: ${e}\n`);
  }
}
