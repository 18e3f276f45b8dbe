// Releases temporary files, mounts and loop devices on success, failure and
// signals. Library code registers disposers in a Scope; bin.ts installs the
// signal handlers (onSignals) that run every live scope and then exit 130.
//
// What a shutdown (first SIGINT, SIGTERM or SIGHUP) does, in this order:
//  1. marks the run as shutting down: no new work (run(), tempDir()) starts;
//  2. aborts every running host tool (SIGTERM, SIGKILL 5 s later: exec.ts)
//     and waits until each one has EXITED, so that no debugfs, mke2fs or qemu
//     still writes into a folder while it is removed;
//  3. closes every scope that is not closed yet, innermost first, and waits
//     for scopes that were already closing (a withScope() whose work failed
//     because of the abort closes its scope itself; that close is the same
//     promise, and the scope stays in the live list until it is done);
//  4. waits for what registered itself late (a temp dir made after its scope
//     closed is removed at once, and waited for).
// A second signal while this runs is answered with one line and does not
// abandon the cleanup, unless the cleanup has already taken FORCE_EXIT_AFTER_MS:
// then it exits at once and names what may be left. (A CI runner's SIGTERM and
// SIGKILL, or a closed terminal's SIGHUP then SIGTERM, thus still clean up;
// SIGKILL cannot be caught: the next run removes what it left, see stale.ts.)
import { AsyncLocalStorage } from 'node:async_hooks';
import { setMaxListeners } from 'node:events';
import { mkdtemp, opendir, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InterruptedError } from './errors.js';
import { RUN_TAG, sweepStale } from './stale.js';

type Disposer = () => Promise<void> | void;

/** Scopes not completely closed: open ones, and those whose disposers still run. */
const liveScopes = new Set<Scope>();
/** Host processes that have not exited yet (exec.ts registers each one). */
const children = new Set<Promise<unknown>>();
/** Work outside any scope that shutdown must wait for: late disposers, temp dirs being created. */
const pending = new Set<Promise<unknown>>();
/**
 * Every running child listens on this signal (execa's cancelSignal): more
 * than 10 at once is expected, not a leak, and must not print Node's
 * MaxListenersExceededWarning.
 */
function newController(): AbortController {
  const c = new AbortController();
  setMaxListeners(0, c.signal);
  return c;
}
let controller = newController();
let shuttingDown = false;
let signalled = false;
/** Set inside disposers: cleanup may still spawn (umount, losetup -d) after an interrupt. */
const cleanupContext = new AsyncLocalStorage<boolean>();

function track(set: Set<Promise<unknown>>, p: Promise<unknown>): void {
  set.add(p);
  const done = () => set.delete(p);
  p.then(done, done);
}

/** True once an interrupt started the shutdown: work still running should stop, not report. */
export function isShuttingDown(): boolean {
  return shuttingDown;
}

/** True once a signal arrived: bin.ts then leaves the exit to the signal handler. */
export function wasInterrupted(): boolean {
  return signalled;
}

/** Throws once an interrupt started the shutdown, except inside cleanup: no new work may start. */
export function checkNotInterrupted(): void {
  if (shuttingDown && !cleanupContext.getStore()) throw new InterruptedError('signal');
}

/** Aborted when part-image is interrupted; exec.ts hands it to every child. */
export function cancelSignal(): AbortSignal {
  return controller.signal;
}

/** Registers a running host process (its promise settles when it has exited): shutdown waits for it. */
export function trackChild<P extends Promise<unknown>>(p: P): P {
  track(children, p);
  return p;
}

/**
 * Promise.all that waits for EVERY branch before it rejects. A plain
 * Promise.all rejects at the first failure while the other branches still
 * run; their withScope()s then make and remove temp dirs after the caller's
 * scope closed, and after the CLI exited (leaving them behind). Use this for
 * every fan-out of work that owns scopes or children.
 */
export async function settleAll<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/** Files unlinked at once by removeTree(). */
const UNLINKS_AT_ONCE = 16;

/**
 * Removes a folder and what it holds. The files are unlinked as a listing
 * streams them, a few at a time: fs.rm() starts every unlink of a folder at
 * once, and for a tar's 100,000 staged files that took 220 MB. fs.rm() then
 * removes what is left, retrying while a writer in this process may still be
 * finishing a file in it.
 */
export async function removeTree(dir: string): Promise<void> {
  try {
    const running = new Set<Promise<void>>();
    for await (const d of await opendir(dir, { bufferSize: 256 })) {
      if (d.isDirectory()) {
        await removeTree(join(dir, d.name));
        continue;
      }
      const p: Promise<void> = unlink(join(dir, d.name)).catch(() => undefined).finally(() => running.delete(p));
      running.add(p);
      if (running.size >= UNLINKS_AT_ONCE) await Promise.race(running);
    }
    await Promise.all(running);
  } catch {
    // Not there, or not a folder: fs.rm() below says what it is.
  }
  await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
}

export class Scope {
  private disposers: { label: string; fn: Disposer }[] = [];
  private closing?: Promise<string[]>;

  constructor() {
    liveScopes.add(this);
  }

  get closed(): boolean {
    return this.closing !== undefined;
  }

  /** Run `fn` when the scope closes, in reverse order of registration. */
  defer(label: string, fn: Disposer): void {
    if (!this.closing) {
      this.disposers.push({ label, fn });
      return;
    }
    // Registered after the scope closed (work that an interrupt cut short): release it now.
    track(pending, cleanupContext.run(true, async () => {
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`warning: cleanup: ${label}: ${(err as Error).message}\n`);
      }
    }));
  }

  /**
   * A temporary directory removed when the scope closes, named
   * PREFIX-PID-START-TAG-XXXXXX so that a later run can tell whether its
   * owner was killed (stale.ts). The first one in a folder removes what
   * killed runs left there.
   */
  async tempDir(prefix = 'part-image-', parent = tmpdir()): Promise<string> {
    checkNotInterrupted();
    await sweepStale([parent]);
    checkNotInterrupted();
    // Tracked until it is registered: a shutdown in between waits for it, then removes it.
    const made = mkdtemp(join(parent, `${prefix}${RUN_TAG}-`)).then((dir) => {
      // Retries: a reader in this process may still be writing into it for a moment.
      this.defer(`remove ${dir}`, () => removeTree(dir));
      return dir;
    });
    track(pending, made);
    return made;
  }

  /** Runs the disposers once; every call returns the same promise, settled when all have run. */
  close(): Promise<string[]> {
    this.closing ??= (async () => {
      const errors: string[] = [];
      try {
        await cleanupContext.run(true, async () => {
          for (const { label, fn } of this.disposers.reverse()) {
            try {
              await fn();
            } catch (err) {
              errors.push(`${label}: ${(err as Error).message}`);
            }
          }
        });
      } finally {
        liveScopes.delete(this);
      }
      return errors;
    })();
    return this.closing;
  }
}

/** Closes `scope`; what could not be released is a warning on stderr, not an error of the run. */
export async function closeScope(scope: Scope): Promise<void> {
  const errors = await scope.close();
  for (const e of errors) process.stderr.write(`warning: cleanup: ${e}\n`);
}

/** Run `fn` with a scope that is always closed afterwards. */
export async function withScope<T>(fn: (scope: Scope) => Promise<T>): Promise<T> {
  const scope = new Scope();
  try {
    return await fn(scope);
  } finally {
    await closeScope(scope);
  }
}

async function drain(set: Set<Promise<unknown>>): Promise<void> {
  while (set.size) await Promise.allSettled([...set]);
}

/** Stop children, wait for them to exit, then close every scope and wait for late work. */
async function releaseEverything(): Promise<void> {
  controller.abort();
  // Disposers run commands (umount, losetup -d): they must not inherit the aborted signal.
  controller = newController();
  await drain(children);
  while (liveScopes.size) {
    // Innermost (newest) first; a scope already closing is waited for, not closed twice.
    for (const scope of [...liveScopes].reverse()) await closeScope(scope);
  }
  await drain(pending);
  await drain(children);
}

/** Abort running children, wait for them, then close every live scope. Used by the signal handler. */
export async function shutdown(): Promise<void> {
  shuttingDown = true;
  await releaseEverything();
}

/**
 * Before a normal exit: releases anything still live (work a bug left running
 * past its caller), so that exiting never abandons a temp dir or a child.
 * Nothing to do, and no cost, when everything was closed.
 */
export async function beforeExit(): Promise<void> {
  if (!liveScopes.size && !children.size && !pending.size) return;
  shuttingDown = true;
  await releaseEverything();
}

/** A second signal after the cleanup has run this long exits at once. */
export const FORCE_EXIT_AFTER_MS = 10_000;
export const HANDLED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Installs the handlers of SIGINT, SIGTERM and SIGHUP: the first one shuts
 * down and then calls `exit(130)`; see the top of this file for a second one.
 */
export function onSignals(exit: (code: number) => void): void {
  let startedAt = 0;
  // After SIGHUP the terminal is gone: a write to it fails (EIO), and that must not crash the cleanup.
  const say = (text: string) => {
    try {
      process.stderr.write(text);
    } catch {
      /* no terminal any more */
    }
  };
  process.stderr.on('error', () => undefined);
  for (const signal of HANDLED_SIGNALS) {
    process.on(signal, () => {
      if (!signalled) {
        signalled = true;
        startedAt = Date.now();
        say(`\npart-image: ${signal}: cleaning up...\n`);
        void shutdown().finally(() => exit(130));
        return;
      }
      const ms = Date.now() - startedAt;
      if (ms < FORCE_EXIT_AFTER_MS) {
        say(`part-image: ${signal} again: still cleaning up (a signal after ${FORCE_EXIT_AFTER_MS / 1000} s of cleanup exits at once)\n`);
        return;
      }
      say(`part-image: ${signal} after ${Math.round(ms / 1000)} s of cleanup: exiting now; temporary files, mounts or a VM may be left behind (the next run removes temporary files)\n`);
      exit(130);
    });
  }
}
