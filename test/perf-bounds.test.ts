// The bounds issue 11 asked for, checked for behaviour (never for time):
// the blob writer behind the tar reader (every byte lands, a failure is
// thrown, nothing is still running once it has settled), how many debugfs
// processes the image reader runs at once (PART_IMAGE_JOBS, else the cores),
// and that reading an image with more batches than that runs them all in
// that many debugfs sessions and leaves Node silent (no
// MaxListenersExceededWarning).
import { availableParallelism, tmpdir } from 'node:os';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobWriter } from '../src/input/tar-blob.js';
import { readerJobs } from '../src/image/debugfs-walk.js';
import { UsageError } from '../src/errors.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-perf-bounds-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('BlobWriter', () => {
  it('writes every blob whole, more than it keeps in flight', async () => {
    const dir = join(work, 'blobs');
    await mkdir(dir);
    const w = new BlobWriter();
    const n = BlobWriter.MAX_OPS * 3;
    for (let i = 0; i < n; i++) {
      const buf = Buffer.alloc(1000 + i, i % 256);
      const blob = join(dir, String(i));
      await w.add(blob, buf.length, () => writeFile(blob, buf));
    }
    await w.drain();
    expect((await readdir(dir)).length).toBe(n);
    for (const i of [0, 77, n - 1]) expect(await readFile(join(dir, String(i)))).toEqual(Buffer.alloc(1000 + i, i % 256));
  });

  it('throws the first failure from drain() and from the next add()', async () => {
    const w = new BlobWriter();
    const missing = join(work, 'no-such-dir', 'blob');
    await w.add(missing, 1, () => writeFile(missing, 'x'));
    await expect(w.drain()).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(w.add(join(work, 'later'), 1, () => writeFile(join(work, 'later'), 'x'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('settled(blob) waits for that blob\'s writes', async () => {
    const w = new BlobWriter();
    const blob = join(work, 'slow');
    let done = false;
    await w.add(blob, 1, async () => {
      await new Promise((r) => setTimeout(r, 50));
      await writeFile(blob, 'x');
      done = true;
    });
    expect(done).toBe(false);
    await w.settled(blob);
    expect(done).toBe(true);
    expect(await readFile(blob, 'utf8')).toBe('x');
  });
});

describe('readerJobs', () => {
  it('is the cores unless PART_IMAGE_JOBS says otherwise', () => {
    expect(readerJobs({})).toBe(availableParallelism());
    expect(readerJobs({ PART_IMAGE_JOBS: '' })).toBe(availableParallelism());
    expect(readerJobs({ PART_IMAGE_JOBS: '3' })).toBe(3);
    for (const bad of ['0', '-1', 'two', '1.5', '1000']) expect(() => readerJobs({ PART_IMAGE_JOBS: bad })).toThrow(UsageError);
  });
});

describe('the image reader at scale', () => {
  // 20,000 empty files in one folder: 20 stat batches of 1,000 in one level,
  // far more than the sessions that run them. A fake debugfs first on PATH
  // counts how many start and how many run at once.
  it('runs at most PART_IMAGE_JOBS debugfs processes, and Node warns of nothing', async () => {
    const tree = join(work, 'wide');
    await mkdir(join(tree, 'd'), { recursive: true });
    await execa('sh', ['-ec', 'cd "$1" && seq 1 20000 | sed "s/^/f/" | xargs touch', 'sh', join(tree, 'd')]);
    const img = join(work, 'wide.img');
    await execa('mke2fs', ['-q', '-F', '-t', 'ext4', '-N', '30000', '-d', tree, img, '200M']);
    const bin = join(work, 'bin');
    await mkdir(bin);
    const log = join(work, 'jobs.log');
    const { stdout: real } = await execa('sh', ['-c', 'command -v debugfs']);
    // Records its start and end; the test reads the largest overlap from it.
    await writeFile(join(bin, 'debugfs'), `#!/bin/sh\necho "+ $$" >> ${log}\n${real} "$@"\nrc=$?\necho "- $$" >> ${log}\nexit $rc\n`);
    await chmod(join(bin, 'debugfs'), 0o755);
    const out = join(work, 'wide.manifest');
    const r = await execa('sh', ['-c', 'node --trace-warnings dist/bin.js manifest --no-hash "$1" > "$2"', 'sh', img, out], {
      env: { PATH: `${bin}:${process.env.PATH}`, PART_IMAGE_JOBS: '2' }, reject: false,
    });
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await readFile(out, 'utf8')).split('\n').filter((l) => l.includes('"/d/f')).length).toBe(20000);
    expect(r.stderr).not.toMatch(/Warning/);
    let running = 0;
    let most = 0;
    const events = (await readFile(log, 'utf8')).trim().split('\n');
    for (const e of events) {
      running += e.startsWith('+') ? 1 : -1;
      most = Math.max(most, running);
    }
    // Two sessions take every batch: no process per batch.
    expect(events.filter((e) => e.startsWith('+')).length).toBe(2);
    expect(most).toBe(2);
  });
});
