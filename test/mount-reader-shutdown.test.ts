// An interrupt in the middle of readMountedImage: shutdown() (what the CLI's
// SIGINT/SIGTERM handler runs) must leave nothing mounted. shutdown() is for
// good: it marks the whole module as shutting down, so this test has a file
// of its own, where vitest's per-file isolation keeps that state from every
// other test. Needs root (loop mounts): fails, does not skip, without it.
import { mkdir, mkdtemp, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readMountedImage } from '../src/image/mount-reader.js';
import { isShuttingDown, Scope, shutdown } from '../src/cleanup.js';
import { isRoot } from './helpers/trees.js';
import { forceRelease, loopLeftovers } from './helpers/mounts.js';
import { withStderr } from './helpers/stderr.js';

let work: string;
let slow: string;
/** Mount points the code under test failed to remove; removed once unmounted. */
const strayDirs: string[] = [];

beforeAll(async () => {
  expect(isRoot, 'loop mounts need root').toBe(true);
  expect(isShuttingDown(), 'this file must start in a fresh module state').toBe(false);
  work = await mkdtemp(join(tmpdir(), 'pi-mount-shutdown-test-'));
  // A 256 MiB sparse file: hashing it keeps the read busy for about a second.
  const slowTree = join(work, 'slow-tree');
  slow = join(work, 'slow.img');
  await mkdir(slowTree);
  await execa('truncate', ['-s', '256M', join(slowTree, 'big')]);
  await execa('mke2fs', ['-q', '-t', 'ext4', '-d', slowTree, slow, '16M']);
});

afterAll(async () => {
  if (!work) return;
  if (slow) await forceRelease(slow);
  for (const d of strayDirs) await rmdir(d).catch(() => undefined);
  await rm(work, { recursive: true, force: true });
});

describe('readMountedImage and shutdown()', () => {
  it('releases the mount when part-image shuts down in the middle of a read', async () => {
    const scope = new Scope();
    let settled = false;
    const reading = readMountedImage(slow, scope).then(
      () => 'done',
      (e: unknown) => e,
    ).finally(() => {
      settled = true;
    });
    // Wait for the mount to appear, then shut down as the SIGINT handler does.
    let mounted: string[] = [];
    for (let i = 0; i < 2000 && !mounted.some((l) => l.includes(' mounted on ')); i++) {
      await new Promise((r) => setTimeout(r, 5));
      mounted = await loopLeftovers(slow);
    }
    const mountDir = mounted.find((l) => l.includes(' mounted on '))?.split(' mounted on ')[1];
    expect(mountDir, 'the image was never mounted').toBeDefined();
    expect(settled, 'the read ended before shutdown: make the slow file bigger').toBe(false);
    // Cleanup problems surface only as warnings on stderr: keep them.
    let warnings: string;
    try {
      ({ text: warnings } = await withStderr(async () => {
        await shutdown();
        expect(isShuttingDown()).toBe(true);
        // The CLI exits right after shutdown(): by then nothing may be mounted.
        expect((await loopLeftovers(slow)).filter((l) => l.includes(' mounted on '))).toEqual([]);
        await reading;
      }));
    } finally {
      await reading;
      if (mountDir) strayDirs.push(mountDir);
    }
    expect(warnings.split('\n').filter((w) => /unmount|umount/.test(w))).toEqual([]);
    // Once the read's last file is closed, the loop device is gone too (autoclear).
    expect(await loopLeftovers(slow)).toEqual([]);
  });
});
