// An interrupt while a loop mount's owner is unmounting it itself (the nspawn
// stage's own release, outside the cleanup): the owner's umount is refused
// once part-image shuts down, and the scope must then unmount on its own,
// not inherit that refusal and leave the image mounted. After the release
// the loop device is gone too. shutdown() is for good, so this test has a
// file of its own (vitest isolates the module state per file). Needs root
// (loop mounts): fails, does not skip, without it.
import { open, mkdtemp, rm, rmdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loopMountReadOnly } from '../src/image/loop-mount.js';
import { isShuttingDown, Scope, shutdown } from '../src/cleanup.js';
import { InterruptedError } from '../src/errors.js';
import { isRoot } from './helpers/trees.js';
import { forceRelease, loopLeftovers } from './helpers/mounts.js';
import { withStderr } from './helpers/stderr.js';

let work: string;
let image: string;

beforeAll(async () => {
  expect(isRoot, 'loop mounts need root').toBe(true);
  expect(isShuttingDown(), 'this file must start in a fresh module state').toBe(false);
  work = await mkdtemp(join(tmpdir(), 'pi-loop-shutdown-test-'));
  image = join(work, 'small.img');
  const tree = join(work, 'tree');
  await execa('mkdir', ['-p', tree]);
  await execa('sh', ['-c', `echo hello > ${tree}/file`]);
  await execa('mke2fs', ['-q', '-t', 'ext4', '-d', tree, image, '8M']);
});

afterAll(async () => {
  if (!work) return;
  if (image) await forceRelease(image);
  await rm(work, { recursive: true, force: true });
});

describe('loopMountReadOnly and shutdown()', () => {
  it("unmounts when shutdown() lands while the owner's own release is retrying a busy unmount", async () => {
    const scope = new Scope();
    const { dir, release } = await loopMountReadOnly(image, scope);
    expect((await loopLeftovers(image, 0)).some((l) => l.includes(' mounted on '))).toBe(true);
    // A file open in the mount makes umount fail (busy): the owner's release waits and retries.
    const busy = await open(join(dir, 'file'), 'r');
    const own = release().then(() => 'released', (e: unknown) => e);
    await new Promise((r) => setTimeout(r, 50));
    // Let go of the mount a little later, while the cleanup retries.
    const letGo = new Promise((r) => setTimeout(r, 300)).then(() => busy.close());
    let warnings: string;
    try {
      ({ text: warnings } = await withStderr(() => shutdown()));
    } finally {
      await letGo;
    }
    // The owner's release was refused by the shutdown (it runs outside the cleanup) ...
    expect(await own).toBeInstanceOf(InterruptedError);
    // ... and the scope unmounted all the same: no warning, no mount, no loop device, no folder.
    expect(warnings.split('\n').filter((w) => /cleanup/.test(w))).toEqual([]);
    expect(await loopLeftovers(image, 0)).toEqual([]);
    expect(await stat(dir).then(() => 'there', () => 'gone')).toBe('gone');
    await rmdir(dir).catch(() => undefined);
  });
});
