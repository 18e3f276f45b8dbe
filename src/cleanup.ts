// Releases temporary files, mounts and loop devices on success, failure and
// SIGINT/SIGTERM. Library code registers disposers in a Scope; cli.ts installs
// the signal handlers that run every live scope and then exits 130.
import { AsyncLocalStorage } from 'node:async_hooks';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InterruptedError } from './errors.js';

type Disposer = () => Promise<void> | void;

const liveScopes = new Set<Scope>();
let controller = new AbortController();
let shuttingDown = false;
/** Set inside disposers: cleanup may still spawn (umount, losetup -d) after an interrupt. */
const cleanupContext = new AsyncLocalStorage<boolean>();
/** Disposers registered on a scope that had already closed; shutdown waits for them. */
const late = new Set<Promise<void>>();

/** True once an interrupt started the shutdown: work still running should stop, not report. */
export function isShuttingDown(): boolean {
  return shuttingDown;
}

/** Throws once an interrupt started the shutdown, except inside cleanup: no new work may start. */
export function checkNotInterrupted(): void {
  if (shuttingDown && !cleanupContext.getStore()) throw new InterruptedError('signal');
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
    if (!this.closed) {
      this.disposers.push({ label, fn });
      return;
    }
    // Registered after an interrupt closed the scope: release it now.
    const p = cleanupContext.run(true, async () => {
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`warning: cleanup: ${label}: ${(err as Error).message}\n`);
      }
    });
    late.add(p);
    void p.finally(() => late.delete(p));
  }

  /** A temporary directory removed when the scope closes. */
  async tempDir(prefix = 'part-image-', parent = tmpdir()): Promise<string> {
    checkNotInterrupted();
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
    await cleanupContext.run(true, async () => {
      for (const { label, fn } of this.disposers.reverse()) {
        try {
          await fn();
        } catch (err) {
          errors.push(`${label}: ${(err as Error).message}`);
        }
      }
    });
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
  await Promise.allSettled([...late]);
}
