// The image reader's hashing (src/image/hash-worker.ts) on a real file: every
// file is answered once with the SHA-256 of its pieces, whether the thread
// or, at the end, the main thread hashed it; files too big for the main
// thread (a long run of zeros, a big extent) are left to the thread; a piece
// past the end of the file is damage, not a crash.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HashWorker, type HashAnswer, type HashJob, type Piece } from '../src/image/hash-worker.js';

let work: string;
let image: string;
const bytes = randomBytes(8 * 1024 * 1024);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-hash-'));
  image = join(work, 'image');
  await writeFile(image, bytes);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** What hashing `pieces` must give, computed here from the bytes written. */
function expected(pieces: Piece[]): string {
  const h = createHash('sha256');
  for (const p of pieces) h.update('zeros' in p ? Buffer.alloc(p.zeros) : bytes.subarray(p.from, p.from + p.bytes));
  return h.digest('hex');
}

describe('HashWorker', () => {
  it('answers every file once, the main thread taking small files of the waiting batches at the end, big ones left to the thread', async () => {
    const jobs: HashJob[] = [];
    for (let i = 0; i < 6000; i++) {
      const from = (i * 4096) % (bytes.length - 8192);
      // Small files: one or two pieces, some with a hole.
      const pieces: Piece[] = i % 3 === 0 ? [{ from, bytes: 1000 + (i % 700) }, { zeros: 4096 }, { from: from + 4096, bytes: 123 }] : [{ from, bytes: 1 + (i % 5000) }];
      jobs.push({ inode: 100 + i, pieces });
    }
    // Too big for the main thread: 3 MB of data, and 64 MB of holes.
    jobs.push({ inode: 90, pieces: [{ from: 0, bytes: 3 * 1024 * 1024 }] });
    jobs.push({ inode: 91, pieces: [{ zeros: 64 * 1024 * 1024 }, { from: 5, bytes: 10 }] });
    const answers: HashAnswer[] = [];
    const w = new HashWorker(image, (a) => answers.push(a));
    try {
      // Big ones last: they are in the last waiting batch, where the main thread starts.
      for (const [i, j] of [...jobs.slice(2), ...jobs.slice(0, 2)].entries()) {
        w.hash(j);
        if (i % 500 === 499) w.flush();
      }
      await w.done();
    } finally {
      await w.close();
    }
    expect(answers).toHaveLength(jobs.length);
    const byInode = new Map(answers.map((a) => [a.inode, a]));
    expect(byInode.size).toBe(jobs.length);
    for (const j of jobs) expect(byInode.get(j.inode), `inode ${j.inode}`).toEqual({ inode: j.inode, sha256: expected(j.pieces) });
    expect(w.hashedHere).toBeGreaterThan(0);
    expect(w.hashedHere).toBeLessThan(jobs.length - 2);
  });

  it('a piece past the end of the file is damage, from the thread and from the main thread alike', async () => {
    const answers: HashAnswer[] = [];
    const w = new HashWorker(image, (a) => answers.push(a));
    try {
      // Batches 0-4 end with 8 MiB of holes, too big for the main thread, which
      // thus never takes from them: their first file (damaged) is the thread's.
      // Batch 5 is all small: the main thread takes from its back, where the
      // damaged file is, while the thread still hashes the holes before it.
      for (let b = 0; b < 6; b++) {
        for (let i = 0; i < 10; i++) {
          const damaged = b < 5 ? i === 0 : i === 9;
          w.hash({ inode: b * 10 + i, pieces: [{ from: bytes.length - 10, bytes: damaged ? 4096 : 10 }] });
        }
        if (b < 5) w.hash({ inode: 1000 + b, pieces: [{ zeros: 8 * 1024 * 1024 }] });
        w.flush();
      }
      await w.done();
    } finally {
      await w.close();
    }
    expect(answers).toHaveLength(65);
    const damaged = answers.filter((a) => 'damage' in a).map((a) => a.inode).sort((x, y) => x - y);
    expect(damaged).toEqual([0, 10, 20, 30, 40, 59]);
    for (const a of answers) if ('damage' in a) expect(a.damage).toMatch(/^inode \d+: a block at byte \d+ lies past the end of the image file$/);
    // The main thread took files of the last batch only.
    expect(w.hashedHere).toBeGreaterThan(0);
    expect(w.hashedHere).toBeLessThanOrEqual(10);
  });
});
