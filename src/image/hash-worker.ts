// Hashes file contents off the main thread, for the rootless image reader
// (image/debugfs-reader.ts). A worker thread reads each file straight from
// the image file through the extent map the main thread checked (holes and
// unwritten extents as zeros, the last block cut at the file size) and
// answers with its SHA-256, while the main thread goes on with the next
// level's debugfs batches and their parsing. Inline on the main thread the
// hashing and its reads took a quarter of a Debian root's readback, and held
// up every level behind them. Once the reader has nothing else left to do,
// the main thread hashes small files of the batches still waiting too.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { checkNotInterrupted } from '../cleanup.js';
import { startThread, type Thread } from '../threads.js';

/** A piece of a file in read order: `zeros` bytes of zeros, or `bytes` bytes from byte `from` of the image. */
export type Piece = { zeros: number } | { from: number; bytes: number };

export interface HashJob {
  inode: number;
  pieces: Piece[];
}

/** The SHA-256 (hex) of each job's inode, or why it could not be read. */
export type HashAnswer = { inode: number; sha256: string } | { inode: number; damage: string };

/**
 * The SHA-256 (hex) of `pieces`, read from `fd` into `buf` (holes from
 * `zeros`, both of CHUNK bytes). Run by the hashing thread and, at the end,
 * by the main thread: it takes nothing from its closure (threads.ts gives
 * the thread its source text).
 */
function hashPieces(
  fd: number, pieces: Piece[], buf: Buffer, zeros: Buffer,
  createHash: typeof import('node:crypto').createHash, readSync: typeof import('node:fs').readSync,
): string {
  const CHUNK = buf.length;
  const h = createHash('sha256');
  for (const p of pieces) {
    if ('zeros' in p) {
      for (let n = p.zeros; n > 0; n -= CHUNK) h.update(zeros.subarray(0, Math.min(n, CHUNK)));
      continue;
    }
    let at = p.from;
    for (let n = p.bytes; n > 0;) {
      const want = Math.min(n, CHUNK);
      let got = 0;
      while (got < want) {
        const r = readSync(fd, buf, got, want - got, at + got);
        if (r === 0) throw new Error(`a block at byte ${at + got} lies past the end of the image file`);
        got += r;
      }
      h.update(buf.subarray(0, want));
      at += want;
      n -= want;
    }
  }
  return h.digest('hex');
}

/** Bytes read (and zeros hashed) at a time. */
const CHUNK = 1024 * 1024;

/**
 * A batch of jobs in shared memory, so that the thread and the main thread
 * can each take jobs of it: the thread from the front, the main thread
 * (at the end of a read) from the back. Layout, in one SharedArrayBuffer:
 * - Int32 [0]: the next job from the front (high 16 bits) and one past the
 *   last job not taken from the back (low 16 bits), changed by
 *   compare-and-swap only;
 * - Int32 [2 + 3i ..]: job i's inode, first piece, piece count;
 * - Float64 from PIECES_AT: piece k's `from` (-1 for zeros) and bytes.
 * Taken jobs are never taken again: the front and back meet, never cross.
 */
export interface SharedBatch {
  sab: SharedArrayBuffer;
  jobs: number;
}

/** Takes the next job from the front (`front`) or the back of `ctl`'s batch; -1 when none is left. Takes nothing from its closure. */
function takeJob(ctl: Int32Array, front: boolean): number {
  for (;;) {
    const v = Atomics.load(ctl, 0);
    const f = v >>> 16;
    const b = v & 0xffff;
    if (f >= b) return -1;
    const next = front ? ((f + 1) << 16) | b : (f << 16) | (b - 1);
    if (Atomics.compareExchange(ctl, 0, v, next) === v) return front ? f : b - 1;
  }
}

/** Job `i` of a shared batch, as the hashing reads it. Takes nothing from its closure. */
function jobAt(ints: Int32Array, floats: Float64Array, i: number): { inode: number; pieces: Piece[] } {
  const inode = ints[2 + 3 * i] >>> 0;
  const first = ints[3 + 3 * i];
  const count = ints[4 + 3 * i];
  const pieces: Piece[] = [];
  for (let k = first; k < first + count; k++) {
    const from = floats[2 * k];
    const bytes = floats[2 * k + 1];
    pieces.push(from < 0 ? { zeros: bytes } : { from, bytes });
  }
  return { inode, pieces };
}

/** The Int32 and Float64 views of a shared batch of `jobs` jobs. */
function views(sab: SharedArrayBuffer, jobs: number): { ints: Int32Array; floats: Float64Array } {
  const at = Math.ceil((2 + 3 * jobs) / 2) * 8;
  return { ints: new Int32Array(sab, 0, 2 + 3 * jobs), floats: new Float64Array(sab, at) };
}

/** `jobs` in shared memory (SharedBatch). */
function shareBatch(jobs: HashJob[]): SharedBatch {
  let pieces = 0;
  for (const j of jobs) pieces += j.pieces.length;
  const at = Math.ceil((2 + 3 * jobs.length) / 2) * 8;
  const sab = new SharedArrayBuffer(at + 16 * pieces);
  const { ints, floats } = views(sab, jobs.length);
  let k = 0;
  jobs.forEach((j, i) => {
    ints[2 + 3 * i] = j.inode;
    ints[3 + 3 * i] = k;
    ints[4 + 3 * i] = j.pieces.length;
    for (const p of j.pieces) {
      floats[2 * k] = 'zeros' in p ? -1 : p.from;
      floats[2 * k + 1] = 'zeros' in p ? p.zeros : p.bytes;
      k++;
    }
  });
  ints[0] = jobs.length;
  return { sab, jobs: jobs.length };
}

/** The worker's whole program, run from its source text (threads.ts) beside its helpers: it takes nothing from its closure. */
function workerMain(): void {
  const { parentPort, workerData } = require('node:worker_threads') as typeof import('node:worker_threads');
  const { openSync, readSync } = require('node:fs') as typeof import('node:fs');
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  const { image, chunk } = workerData as { image: string; chunk: number };
  const buf = Buffer.allocUnsafe(chunk);
  const zeros = Buffer.alloc(chunk);
  const fd = openSync(image, 'r');
  parentPort!.on('message', (batch: SharedBatch) => {
    const { ints, floats } = views(batch.sab, batch.jobs);
    const answers: HashAnswer[] = [];
    for (let i = takeJob(ints, true); i >= 0; i = takeJob(ints, true)) {
      const j = jobAt(ints, floats, i);
      try {
        answers.push({ inode: j.inode, sha256: hashPieces(fd, j.pieces, buf, zeros, createHash, readSync) });
      } catch (err) {
        answers.push({ inode: j.inode, damage: `inode ${j.inode}: ${(err as Error).message}` });
      }
    }
    parentPort!.postMessage(answers);
  });
}

/** Bytes of file data per message to the worker: answers come back while later levels are still read. */
const BATCH_BYTES = 32 * 1024 * 1024;
/** Jobs per batch, at most (SharedBatch counts them in 16 bits). */
const BATCH_JOBS = 2000;
/** The main thread takes only files of at most this many bytes (holes included): one can't hold up an interrupt. */
const HELP_MAX_BYTES = CHUNK;
/** The main thread looks at the event loop (answers, signals) after this much hashing. */
const HELP_SLICE_MS = 5;

function jobBytes(pieces: Piece[]): number {
  let n = 0;
  for (const p of pieces) n += 'zeros' in p ? p.zeros : p.bytes;
  return n;
}

/**
 * One worker thread hashing files of one image, started at once: its start
 * (30-50 ms of bootstrap) runs beside the reader's first debugfs levels,
 * not after the first stats. hash() queues jobs; each answer goes to `take`
 * as it arrives (none is kept: 400,000 of them took 20 MB at the end of a
 * readback); done() waits for every answer; close() ends the worker (an
 * interrupt ends it at once: a hostile sparse file can claim terabytes of
 * zeros).
 *
 * Each batch goes to the thread at once, in shared memory (SharedBatch).
 * Once the reader has nothing else to do (done()), the main thread takes
 * small files from the back of the last batches while the thread goes on
 * from the front: on a Debian root the thread alone was still hashing for
 * 75-185 ms after the last stat was in, with the other core idle. (Holding
 * batches back for the main thread instead left the thread waiting while
 * the main thread parsed: 745 ms against 638.)
 */
export class HashWorker {
  private thread: Thread | undefined;
  private batch: HashJob[] = [];
  private batchBytes = 0;
  /** Batches at the thread, oldest first, each with its answer still to come. */
  private waiting: { shared: SharedBatch; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private answers: Promise<void>[] = [];
  private failure: unknown;
  /** Files the main thread hashed (help()), for tests and measurements. */
  hashedHere = 0;

  constructor(
    private readonly image: string,
    private readonly take: (answer: HashAnswer) => void,
  ) {
    this.start();
  }

  /** Queues one file. */
  hash(job: HashJob): void {
    this.batch.push(job);
    this.batchBytes += jobBytes(job.pieces);
    if (this.batchBytes >= BATCH_BYTES || this.batch.length >= BATCH_JOBS) this.flush();
  }

  /** Sends what is queued. */
  flush(): void {
    if (this.batch.length === 0) return;
    const shared = shareBatch(this.batch);
    this.batch = [];
    this.batchBytes = 0;
    const t = this.start();
    const answer = new Promise<void>((resolve, reject) => {
      if (this.failure !== undefined) reject(this.failure);
      else this.waiting.push({ shared, resolve, reject });
    });
    // Awaited in done(); until then a failure must not count as unhandled.
    answer.catch(() => undefined);
    this.answers.push(answer);
    if (this.failure === undefined) t.post(shared);
  }

  /** Settles once every job queued so far is answered; the main thread hashes small files meanwhile. */
  async done(): Promise<void> {
    this.flush();
    await this.help();
    await Promise.all(this.answers);
    this.answers = [];
  }

  async close(): Promise<void> {
    const t = this.thread;
    this.thread = undefined;
    await t?.stop();
  }

  /**
   * The main thread's share at the end: files from the back of the newest
   * batch the thread has not answered, then the one before, looking at the
   * event loop every HELP_SLICE_MS (a signal ends the read). A batch whose
   * last file left is big is the thread's from there on.
   */
  private async help(): Promise<void> {
    let fd: number | undefined;
    let buf: Buffer | undefined;
    let zeros: Buffer | undefined;
    try {
      let slice = performance.now();
      // Newest first. A batch answered meanwhile has no file left to take.
      for (const { shared: batch } of [...this.waiting].reverse()) {
        if (this.failure !== undefined) return;
        const { ints, floats } = views(batch.sab, batch.jobs);
        for (;;) {
          // The last file left, looked at before it is taken: a big one stays for the thread.
          const v = Atomics.load(ints, 0);
          if (v >>> 16 >= (v & 0xffff)) break;
          if (jobBytes(jobAt(ints, floats, (v & 0xffff) - 1).pieces) > HELP_MAX_BYTES) break;
          const i = takeJob(ints, false);
          if (i < 0) break;
          const job = jobAt(ints, floats, i);
          fd ??= openSync(this.image, 'r');
          buf ??= Buffer.allocUnsafe(CHUNK);
          zeros ??= Buffer.alloc(CHUNK);
          let answer: HashAnswer;
          try {
            answer = { inode: job.inode, sha256: hashPieces(fd, job.pieces, buf, zeros, createHash, readSync) };
          } catch (err) {
            answer = { inode: job.inode, damage: `inode ${job.inode}: ${(err as Error).message}` };
          }
          this.hashedHere++;
          this.take(answer);
          if (performance.now() - slice >= HELP_SLICE_MS) {
            await new Promise((r) => setImmediate(r));
            checkNotInterrupted();
            if (this.failure !== undefined) return;
            slice = performance.now();
          }
        }
      }
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  private start(): Thread {
    this.thread ??= startThread(workerMain, {
      name: 'hashing',
      helpers: [hashPieces, takeJob, jobAt, views],
      workerData: { image: this.image, chunk: CHUNK },
      unanswered: () => this.waiting.length,
      onFail: (err) => this.fail(err),
      onMessage: (m) => {
        const waiting = this.waiting.shift();
        try {
          for (const a of m as HashAnswer[]) this.take(a);
          waiting?.resolve();
        } catch (err) {
          waiting?.reject(err);
        }
      },
    });
    return this.thread;
  }

  private fail(err: unknown): void {
    this.failure ??= err;
    for (const w of this.waiting.splice(0)) w.reject(this.failure);
  }
}
