// readMountedImage on a real ext4 image made with `mke2fs -d` from the sample
// tree: the loop mount must show what the tree holds, and the mount and loop
// device must be gone afterwards, also when reading fails. Needs root: fails
// (does not skip) without it. The read interrupted by shutdown() is in
// mount-reader-shutdown.test.ts, alone, since shutdown() is for good.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readMountedImage } from '../src/image/mount-reader.js';
import { readDirTree } from '../src/walk/dir.js';
import { diffManifests } from '../src/manifest/diff.js';
import { isShuttingDown, Scope, withScope } from '../src/cleanup.js';
import { EnvironmentError, InputError } from '../src/errors.js';
import { buildMountArgs, buildUmountArgs } from '../src/tools/mount.js';
import { isRoot, makeSampleTree } from './helpers/trees.js';
import { forceRelease, loopLeftovers } from './helpers/mounts.js';

let work: string;
let tree: string;
let image: string;

beforeAll(async () => {
  expect(isRoot, 'loop mounts need root').toBe(true);
  // The shutdown test lives in mount-reader-shutdown.test.ts: its module-wide
  // state must not reach this file.
  expect(isShuttingDown()).toBe(false);
  work = await mkdtemp(join(tmpdir(), 'pi-mount-test-'));
  tree = join(work, 'tree');
  await mkdir(tree);
  await makeSampleTree(tree);
  image = join(work, 'sample.img');
  await execa('mke2fs', ['-q', '-t', 'ext4', '-d', tree, image, '64M']);
});

afterAll(async () => {
  if (!work) return;
  for (const img of [image, join(work, 'bad.img')]) if (img) await forceRelease(img);
  await rm(work, { recursive: true, force: true });
});

describe('mount tool args', () => {
  it('mounts read-only through a loop device without replaying the journal', () => {
    expect(buildMountArgs('/x/a.img', '/mnt/p')).toEqual(['-o', 'loop,ro,noload', '/x/a.img', '/mnt/p']);
    expect(buildUmountArgs('/mnt/p')).toEqual(['/mnt/p']);
    expect(buildUmountArgs('/mnt/p', { lazy: true })).toEqual(['-l', '/mnt/p']);
  });
});

describe('readMountedImage', () => {
  it('reads what the source tree holds (lost+found aside) and unmounts', async () => {
    const fromImage = await withScope((scope) => readMountedImage(image, scope));
    const fromTree = (await readDirTree(tree)).manifest;
    expect(diffManifests(fromTree, fromImage, { ignoreExtra: (p) => p === '/lost+found' })).toEqual([]);
    const paths = fromImage.entries.map((e) => e.path);
    expect(paths).toContain('/lost+found');
    expect(fromImage.entries.find((e) => e.path === '/lost+found')?.type).toBe('dir');
    // Not vacuous: the interesting entries are there.
    const ping = fromImage.entries.find((e) => e.path === '/usr/bin/pinglike');
    expect(ping?.xattrs?.['security.capability']).toBe('0100000200200000000000000000000000000000');
    expect(fromImage.entries.find((e) => e.path === '/dev/loop9')?.rdev).toBe('7,9');
    expect(fromImage.entries.find((e) => e.path === '/srv/hard-b')?.hardlink).toBe('/srv/hard-a');
    expect(await loopLeftovers(image)).toEqual([]);
  });

  it('unmounts when reading fails', async () => {
    const bad = join(work, 'bad.img');
    const badTree = join(work, 'bad-tree');
    await mkdir(badTree);
    // A name that is not UTF-8 makes the directory reader fail inside the mount.
    await writeFile(Buffer.concat([Buffer.from(`${badTree}/x-`), Buffer.from([0xff])]), 'x');
    await execa('mke2fs', ['-q', '-t', 'ext4', '-d', badTree, bad, '16M']);
    const err = await withScope((scope) => readMountedImage(bad, scope)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/not valid UTF-8/);
    expect(await loopLeftovers(bad)).toEqual([]);
  });

  it('refuses a missing image', async () => {
    await expect(withScope((scope) => readMountedImage(join(work, 'none.img'), scope))).rejects.toBeInstanceOf(InputError);
  });

  it('asks for root when it is not root', async () => {
    expect(typeof process.seteuid, 'vitest must run this file in a forked process').toBe('function');
    const scope = new Scope();
    process.seteuid!(65534);
    const err = await readMountedImage(image, scope)
      .catch((e: unknown) => e)
      .finally(() => process.seteuid!(0));
    await scope.close();
    expect(err).toBeInstanceOf(EnvironmentError);
    expect((err as EnvironmentError).hint).toMatch(/root/);
  });
});
