// The one place that starts worker threads (as exec.ts is for processes).
// A thread runs a function's source text (eval: a module file of its own
// would not load under the test runner, which runs the TypeScript sources),
// so the function must take nothing from its closure. Whatever ends a thread
// before its owner stops it (an error in it, its exit, part-image's
// shutdown) goes to the owner's onFail, once the thread is let go.
import { Worker } from 'node:worker_threads';
import { cancelSignal } from './cleanup.js';
import { InterruptedError } from './errors.js';

export interface ThreadOptions {
  /** For messages: "the NAME thread exited". */
  name: string;
  workerData?: unknown;
  /** Functions `main` calls, given to the thread by their source text too (each takes nothing from its closure). */
  helpers?: ((...args: never[]) => unknown)[];
  onMessage(message: unknown): void;
  onFail(err: unknown): void;
  /** Batches sent and not answered, for the message on an early exit. */
  unanswered(): number;
}

export interface Thread {
  post(message: unknown, transfer?: ArrayBuffer[]): void;
  /** Ends the thread; nothing it does after this reaches onFail. */
  stop(): Promise<void>;
}

export function startThread(main: () => void, o: ThreadOptions): Thread {
  const source = [...(o.helpers ?? []).map((f) => f.toString()), `(${main.toString()})()`].join('\n');
  const w = new Worker(source, { eval: true, workerData: o.workerData });
  let stopped = false;
  const signal = cancelSignal();
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    signal.removeEventListener('abort', onCancel);
    await w.terminate();
  };
  const fail = (err: unknown) => {
    if (stopped) return;
    void stop();
    o.onFail(err);
  };
  // A hostile input can keep a thread busy for hours (terabytes of holes to hash): a shutdown ends it at once.
  const onCancel = () => fail(new InterruptedError('signal'));
  w.on('message', (m: unknown) => o.onMessage(m));
  w.on('error', fail);
  w.on('exit', (code) => fail(new Error(`the ${o.name} thread exited (code ${code}) with ${o.unanswered()} batch(es) unanswered`)));
  if (signal.aborted) onCancel();
  else signal.addEventListener('abort', onCancel, { once: true });
  return { post: (m, transfer) => w.postMessage(m, transfer), stop };
}
