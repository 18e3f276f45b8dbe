// The race behind "a rejected verify sometimes leaves $TMPDIR/part-image-debugfs-*"
// (issue 8, §3): the readback runs many debugfs batches side by side. With
// Promise.all, the first batch that fails rejects the whole read at once
// while the other batches still run; each of those holds a temp dir that it
// removes only when its debugfs ends, after the caller (and, in the CLI, the
// process) has already moved on. settleAll() waits for every branch.
//
// No wall clock: the slow batches run through a debugfs on PATH that waits
// (for a file the test creates) before it execs the real debugfs on a real
// image; the test checks which temp dirs exist at the moment the fan-out
// rejected, and whether the slow batches had been released by then.
import { execa } from 'execa';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { settleAll, withScope } from '../../src/cleanup.js';
import { readImageManifest } from '../../src/image/debugfs-reader.js';
import { runDebugfs } from '../../src/tools/debugfs.js';

let work: string;
let tmp: string;
const savedTmp = process.env.TMPDIR;
const savedPath = process.env.PATH;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-fanout-'));
});
afterAll(async () => {
  process.env.TMPDIR = savedTmp;
  process.env.PATH = savedPath;
  await rm(work, { recursive: true, force: true });
});
beforeEach(async () => {
  // os.tmpdir() reads TMPDIR on every call: each case gets its own, so that only its own temp dirs are counted.
  tmp = await mkdtemp(join(work, 'tmp-'));
  process.env.TMPDIR = tmp;
});

/** A debugfs on PATH that holds each run on a *blocked* image until release(), then runs the real one. */
async function holdingDebugfs(): Promise<{ image: string; waiting: () => Promise<number>; release: () => Promise<void> }> {
  const bin = await mkdtemp(join(work, 'bin-'));
  const real = (await execa('sh', ['-c', 'command -v debugfs'])).stdout.trim();
  const gate = join(bin, 'release');
  await writeFile(join(bin, 'debugfs'), `#!/bin/sh
for a; do img=$a; done
case "$img" in
*blocked*) : > "${gate}.waiting.$$"; while [ ! -e "${gate}" ]; do sleep 0.05; done ;;
esac
exec ${real} "$@"
`, { mode: 0o755 });
  process.env.PATH = `${bin}:${savedPath}`;
  const image = join(work, 'blocked.img');
  await execa('mke2fs', ['-q', '-F', '-t', 'ext4', image, '8M']);
  return {
    image,
    waiting: async () => (await readdir(bin)).filter((n) => n.startsWith('release.waiting.')).length,
    release: () => writeFile(gate, ''),
  };
}

async function fanOutWithOneFailure(all: <T>(ps: Promise<T>[]) => Promise<T[]>, slow: number) {
  const hold = await holdingDebugfs();
  const notExt4 = join(work, 'zeros.img');
  await writeFile(notExt4, Buffer.alloc(1024 * 1024));
  let released = false;
  const blocked = Array.from({ length: slow }, () => runDebugfs(hold.image, ['stats']));
  const failing = runDebugfs(notExt4, ['stats']);
  const outcome = all([...blocked, failing]).then(
    () => ({ rejected: false, tempDirs: [] as string[], releasedFirst: released }),
    async () => {
      const releasedFirst = released;
      return { rejected: true, tempDirs: (await readdir(tmp)).filter((n) => n.startsWith('part-image-debugfs-')), releasedFirst };
    },
  );
  // The failing batch is done and every slow batch waits at the gate.
  await failing.catch(() => undefined);
  while ((await hold.waiting()) < slow) await sleep(20);
  // A fan-out that rejects at the first failure has done so by now: it needs no more than the failure itself.
  await Promise.race([outcome, sleep(1000)]);
  released = true;
  await hold.release();
  const result = await outcome;
  await Promise.allSettled(blocked);
  return { ...result, after: await readdir(tmp) };
}

describe('a fan-out of debugfs batches with one failing batch', () => {
  it('Promise.all rejects while the other batches still hold their temp dirs (the race, reproduced)', async () => {
    const r = await fanOutWithOneFailure((ps) => Promise.all(ps), 6);
    expect(r.rejected).toBe(true);
    expect(r.releasedFirst).toBe(false);
    expect(r.tempDirs).toHaveLength(6);
    // Once the batches end, they do remove their dirs; in the CLI the process has exited by then.
    expect(r.after).toEqual([]);
  });

  it('settleAll rejects only after every batch ended and removed its temp dir', async () => {
    const r = await fanOutWithOneFailure(settleAll, 6);
    expect(r.rejected).toBe(true);
    expect(r.releasedFirst).toBe(true);
    expect(r.tempDirs).toEqual([]);
    expect(r.after).toEqual([]);
  });

  it('a scope closed by a failing readback leaves no temp dir, on a real damaged image', async () => {
    // 9,000 directories (three ls batches of 4,000) and one whose directory block is zeroed: its batch fails, the others run on.
    const img = join(work, 'damaged.img');
    const tree = join(work, 'tree');
    for (let i = 0; i < 9000; i++) {
      await mkdir(join(tree, `d${i}`), { recursive: true });
      await writeFile(join(tree, `d${i}`, 'f'), `${i}\n`);
    }
    await execa('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-d', tree, img, '128M']);
    const blk = (await execa('debugfs', ['-R', 'bmap /d4500 0', img])).stdout.trim();
    expect(blk).toMatch(/^\d+$/);
    await execa('dd', ['if=/dev/zero', `of=${img}`, 'bs=4096', `seek=${blk}`, 'count=1', 'conv=notrunc'], { stdio: 'ignore' });
    const err = await withScope(() => readImageManifest(img, { hash: true })).then(() => undefined, (e: Error) => e);
    expect(err?.message).toMatch(/cannot list directory|cannot read inode|debugfs|past the end/);
    expect(await readdir(tmp)).toEqual([]);
  });
});
