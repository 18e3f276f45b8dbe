// Writes a tar's small staged files from a worker thread, for tar-staging.ts.
// Creating a file costs more than writing a few KiB into it: on the
// 500k-entry tar the read spent 12 of its 44 s in writeFileSync() of
// 400,000 small files into RAM (6.4 s of it in open()), on the main thread,
// which also parses the archive and hashes every byte. Here the main thread
// copies each file into a batch and moves on; a worker thread makes the files
// on the other core.
//
// The worker also hashes the files it is asked to (the reader's small files
// when it hashes): on the 500k-entry tar the main thread spent about 4 of
// its 47 s making, feeding and finishing 480,000 SHA-256 hashes.
//
// A file is written to its RAM path; when the tmpfs is full (ENOSPC, EDQUOT:
// another program took the room) the worker writes it to its disk path
// instead, and says so: tar-staging.ts then sends every later file to disk
// and names the file by its disk path (final()).
import { startThread, type Thread } from '../threads.js';

interface Batch {
  /** Where each file goes, and where it goes instead when the tmpfs is full. */
  paths: string[];
  fallbacks: string[];
  /** Each file's length; the bytes follow one another in `data`. */
  lengths: number[];
  /** Whether to hash each file. */
  hash: boolean[];
  data: ArrayBuffer;
}

/** Where a file's SHA-256 (hex) is put once the worker has hashed it. */
export interface HashTarget {
  sha256?: string;
}

interface Reply {
  /** The batch's buffer, back for the next batch. */
  data: ArrayBuffer;
  /** Indexes of the files written to their fallback paths. */
  moved: number[];
  /** The SHA-256 (hex) of each file hashed, by index ('' for the others). */
  hashes: string[];
  /** The first error other than a full tmpfs; the batch stopped there. */
  error?: { message: string; code?: string; syscall?: string; path?: string };
}

/** The worker's whole program, run from its source text (threads.ts): it takes nothing from its closure. */
function workerMain(): void {
  const { parentPort } = require('node:worker_threads') as typeof import('node:worker_threads');
  const { writeFileSync, unlinkSync } = require('node:fs') as typeof import('node:fs');
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  const full = (e: NodeJS.ErrnoException) => e.code === 'ENOSPC' || e.code === 'EDQUOT';
  parentPort!.on('message', (b: Batch) => {
    const reply: Reply = { data: b.data, moved: [], hashes: [] };
    let at = 0;
    for (let i = 0; i < b.paths.length; i++) {
      const bytes = new Uint8Array(b.data, at, b.lengths[i]);
      at += b.lengths[i];
      reply.hashes.push(b.hash[i] ? createHash('sha256').update(bytes).digest('hex') : '');
      try {
        try {
          writeFileSync(b.paths[i], bytes);
        } catch (err) {
          if (!full(err as NodeJS.ErrnoException)) throw err;
          try {
            unlinkSync(b.paths[i]);
          } catch {
            // not made
          }
          writeFileSync(b.fallbacks[i], bytes);
          reply.moved.push(i);
        }
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        reply.error = { message: e.message, code: e.code, syscall: e.syscall, path: e.path };
        break;
      }
    }
    parentPort!.postMessage(reply, [b.data]);
  });
}

/** Bytes and files per batch (a file of more bytes goes in a batch of its own). */
const BATCH_BYTES = 1024 * 1024;
const BATCH_FILES = 256;
/** Batches sent and not answered, at most, before room() makes the reader wait. */
const AHEAD = 8;

export class SmallFileWriter {
  private thread: Thread | undefined;
  private paths: string[] = [];
  private fallbacks: string[] = [];
  private lengths: number[] = [];
  private targets: (HashTarget | undefined)[] = [];
  private data = new Uint8Array(BATCH_BYTES);
  /**
   * Batch buffers the worker gave back, for the next batches: a new 1 MiB
   * buffer per batch left RSS 70 MB higher after a 500k-entry read (freed,
   * but not given back by the allocator).
   */
  private spare: ArrayBuffer[] = [];
  private bytes = 0;
  /** Batches in flight, in order, each with its answer. */
  private inflight: { paths: string[]; done: Promise<void> }[] = [];
  private waiting: { resolve: () => void; reject: (e: unknown) => void; batch: Batch; targets: (HashTarget | undefined)[] }[] = [];
  private error: unknown;

  /** `moved(path, fallback, bytes)`: the file went to its fallback path (the tmpfs was full). */
  constructor(private readonly moved: (path: string, fallback: string, bytes: number) => void) {}

  /**
   * Queues one file (its bytes are copied: `buf` is the caller's again once
   * this returns). With `hashTo`, its SHA-256 is put there once the worker
   * has written the batch (before the batch settles).
   */
  write(path: string, fallback: string, buf: Buffer, hashTo?: HashTarget): void {
    this.check();
    if (this.bytes + buf.length > this.data.length) {
      this.send();
      if (buf.length > this.data.length) this.data = new Uint8Array(buf.length);
    }
    this.data.set(buf, this.bytes);
    this.bytes += buf.length;
    this.paths.push(path);
    this.fallbacks.push(fallback);
    this.lengths.push(buf.length);
    this.targets.push(hashTo);
    if (this.bytes >= BATCH_BYTES || this.paths.length >= BATCH_FILES) this.send();
  }

  /** A promise while AHEAD batches are unanswered: the reader waits for it. */
  room(): Promise<void> | undefined {
    if (this.inflight.length < AHEAD) return undefined;
    return this.inflight[0].done.then(() => undefined, () => undefined);
  }

  /** Settles once `path` is written, if it is queued (before it is unlinked, say). */
  async settled(path: string): Promise<void> {
    if (this.paths.includes(path)) this.send();
    const b = this.inflight.find((x) => x.paths.includes(path));
    await b?.done.catch(() => undefined);
  }

  /** Sends what is queued and waits for every file; throws the first failure. */
  async drain(): Promise<void> {
    this.send();
    await this.settle();
    this.check();
  }

  /** Waits for every batch sent, failed or not; then ends the worker (before the staging folders are removed). */
  async settle(): Promise<void> {
    await Promise.allSettled(this.inflight.map((b) => b.done));
    const t = this.thread;
    this.thread = undefined;
    await t?.stop();
  }

  private send(): void {
    if (this.paths.length === 0) return;
    // The batch's buffer moves to the worker (no copy); the next batch gets a new one.
    const data = this.data.buffer as ArrayBuffer;
    const targets = this.targets;
    const batch: Batch = { paths: this.paths, fallbacks: this.fallbacks, lengths: this.lengths, hash: targets.map((t) => t !== undefined), data };
    this.paths = [];
    this.fallbacks = [];
    this.lengths = [];
    this.targets = [];
    const next = this.spare.pop();
    this.data = next ? new Uint8Array(next) : new Uint8Array(BATCH_BYTES);
    this.bytes = 0;
    const done = new Promise<void>((resolve, reject) => {
      this.waiting.push({ resolve, reject, batch, targets });
    });
    done.catch(() => undefined);
    this.inflight.push({ paths: batch.paths, done });
    if (this.error !== undefined) this.fail(this.error);
    else this.start().post(batch, [data]);
  }

  private start(): Thread {
    this.thread ??= startThread(workerMain, {
      name: 'staging',
      unanswered: () => this.waiting.length,
      onFail: (err) => this.fail(err),
      onMessage: (m) => this.answer(m as Reply),
    });
    return this.thread;
  }

  private answer(r: Reply): void {
    const w = this.waiting.shift();
    this.inflight.shift();
    if (r.data.byteLength === BATCH_BYTES && this.spare.length <= AHEAD) this.spare.push(r.data);
    if (!w) return;
    for (const i of r.moved) this.moved(w.batch.paths[i], w.batch.fallbacks[i], w.batch.lengths[i]);
    r.hashes.forEach((h, i) => {
      const t = w.targets[i];
      if (t && h) t.sha256 = h;
    });
    if (r.error) {
      const err = Object.assign(new Error(r.error.message), { code: r.error.code, syscall: r.error.syscall, path: r.error.path });
      this.error ??= err;
      w.reject(err);
    } else w.resolve();
  }

  private fail(err: unknown): void {
    this.error ??= err;
    for (const w of this.waiting.splice(0)) w.reject(this.error);
    this.inflight = [];
  }

  private check(): void {
    if (this.error !== undefined) throw this.error;
  }
}
