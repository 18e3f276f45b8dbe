// Hashes file contents off the main thread, for the rootless image reader
// (image/debugfs-reader.ts). A worker thread reads each file straight from
// the image file through the extent map the main thread checked (holes and
// unwritten extents as zeros, the last block cut at the file size) and
// answers with its SHA-256, while the main thread goes on with the next
// level's debugfs batches and their parsing. Inline on the main thread the
// hashing and its reads took a quarter of a Debian root's readback, and held
// up every level behind them.
import { startThread, type Thread } from '../threads.js';

/** A piece of a file in read order: `zeros` bytes of zeros, or `bytes` bytes from byte `from` of the image. */
export type Piece = { zeros: number } | { from: number; bytes: number };

export interface HashJob {
  inode: number;
  pieces: Piece[];
}

/** The SHA-256 (hex) of each job's inode, or why it could not be read. */
export type HashAnswer = { inode: number; sha256: string } | { inode: number; damage: string };

/** The worker's whole program, run from its source text (threads.ts): it takes nothing from its closure. */
function workerMain(): void {
  const { parentPort, workerData } = require('node:worker_threads') as typeof import('node:worker_threads');
  const { openSync, readSync } = require('node:fs') as typeof import('node:fs');
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  const CHUNK = 1024 * 1024;
  const buf = Buffer.allocUnsafe(CHUNK);
  const zeros = Buffer.alloc(CHUNK);
  const fd = openSync((workerData as { image: string }).image, 'r');
  const hashOne = (pieces: Piece[]): string => {
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
  };
  parentPort!.on('message', (jobs: HashJob[]) => {
    const answers: HashAnswer[] = [];
    for (const j of jobs) {
      try {
        answers.push({ inode: j.inode, sha256: hashOne(j.pieces) });
      } catch (err) {
        answers.push({ inode: j.inode, damage: `inode ${j.inode}: ${(err as Error).message}` });
      }
    }
    parentPort!.postMessage(answers);
  });
}

/** Bytes of file data per message to the worker: answers come back while later levels are still read. */
const BATCH_BYTES = 32 * 1024 * 1024;
const BATCH_JOBS = 2000;

/**
 * One worker thread hashing files of one image, started at once: its start
 * (30-50 ms of bootstrap) runs beside the reader's first debugfs levels,
 * not after the first stats, when the hashing is what the read waits for.
 * hash() queues jobs; each answer goes to `take` as it arrives (none is
 * kept: 400,000 of them took 20 MB at the end of a readback); done() waits
 * for every answer; close() ends the worker (an interrupt ends it at once:
 * a hostile sparse file can claim terabytes of zeros).
 */
export class HashWorker {
  private thread: Thread | undefined;
  private batch: HashJob[] = [];
  private batchBytes = 0;
  private waiting: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private answers: Promise<void>[] = [];
  private failure: unknown;

  constructor(
    private readonly image: string,
    private readonly take: (answer: HashAnswer) => void,
  ) {
    this.start();
  }

  /** Queues one file. */
  hash(job: HashJob): void {
    this.batch.push(job);
    for (const p of job.pieces) this.batchBytes += 'zeros' in p ? p.zeros : p.bytes;
    if (this.batchBytes >= BATCH_BYTES || this.batch.length >= BATCH_JOBS) this.flush();
  }

  /** Sends what is queued. */
  flush(): void {
    if (this.batch.length === 0) return;
    const jobs = this.batch;
    this.batch = [];
    this.batchBytes = 0;
    const t = this.start();
    const answer = new Promise<void>((resolve, reject) => {
      if (this.failure !== undefined) reject(this.failure);
      else this.waiting.push({ resolve, reject });
    });
    // Awaited in done(); until then a failure must not count as unhandled.
    answer.catch(() => undefined);
    this.answers.push(answer);
    if (this.failure === undefined) t.post(jobs);
  }

  /** Settles once every job queued so far is answered. */
  async done(): Promise<void> {
    this.flush();
    await Promise.all(this.answers);
    this.answers = [];
  }

  async close(): Promise<void> {
    const t = this.thread;
    this.thread = undefined;
    await t?.stop();
  }

  private start(): Thread {
    this.thread ??= startThread(workerMain, {
      name: 'hashing',
      workerData: { image: this.image },
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
