// readMountedImage on a real ext4 image made with `mke2fs -d` from the sample
// tree: the loop mount must show what the tree holds, and the mount and loop
// device must be gone afterwards, also when reading fails. Needs root: fails
// (does not skip) without it.
import { mkdir, mkdtemp, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readMountedImage } from '../src/image/mount-reader.js';
import { readDirTree } from '../src/input/dir.js';
import { diffManifests } from '../src/manifest/diff.js';
import { Scope, shutdown, withScope } from '../src/cleanup.js';
import { EnvironmentError, InputError } from '../src/errors.js';
import { buildMountArgs, buildUmountArgs } from '../src/tools/mount.js';
import { isRoot, makeSampleTree } from './helpers/trees.js';

let work: string;
let tree: string;
let image: string;
/** Mount points the code under test failed to remove; removed once unmounted. */
const strayDirs: string[] = [];

/** Loop devices backed by `file`, and where they are mounted. */
async function leftovers(file: string): Promise<string[]> {
  const loops = (await execa('losetup', ['-j', file])).stdout.split('\n').filter(Boolean);
  const found: string[] = [];
  for (const line of loops) {
    const dev = line.slice(0, line.indexOf(':'));
    found.push(line);
    const targets = (await execa('findmnt', ['-n', '-o', 'TARGET', '-S', dev], { reject: false })).stdout;
    found.push(...targets.split('\n').filter(Boolean).map((t) => `${dev} mounted on ${t}`));
  }
  return found;
}

beforeAll(async () => {
  expect(isRoot, 'loop mounts need root').toBe(true);
  work = await mkdtemp(join(tmpdir(), 'pi-mount-test-'));
  tree = join(work, 'tree');
  await mkdir(tree);
  await makeSampleTree(tree);
  image = join(work, 'sample.img');
  await execa('mke2fs', ['-q', '-t', 'ext4', '-d', tree, image, '64M']);
});

/** Safety net, so that a failing test does not leave the host with a mount: unmount what backs `file`. */
async function forceRelease(file: string): Promise<void> {
  const loops = (await execa('losetup', ['-j', file], { reject: false })).stdout.split('\n').filter(Boolean);
  for (const line of loops) {
    const dev = line.slice(0, line.indexOf(':'));
    const targets = (await execa('findmnt', ['-n', '-o', 'TARGET', '-S', dev], { reject: false })).stdout.split('\n');
    for (const t of targets.filter(Boolean)) await execa('umount', [t], { reject: false });
    await execa('losetup', ['-d', dev], { reject: false });
  }
}

afterAll(async () => {
  if (!work) return;
  for (const img of [image, join(work, 'bad.img'), join(work, 'slow.img')]) if (img) await forceRelease(img);
  for (const d of strayDirs) await rmdir(d).catch(() => undefined);
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
    expect(await leftovers(image)).toEqual([]);
  });

  it('releases the mount when part-image shuts down in the middle of a read', async () => {
    // A 256 MiB sparse file: hashing it keeps the read busy for about a second.
    const slowTree = join(work, 'slow-tree');
    const slow = join(work, 'slow.img');
    await mkdir(slowTree);
    await execa('truncate', ['-s', '256M', join(slowTree, 'big')]);
    await execa('mke2fs', ['-q', '-t', 'ext4', '-d', slowTree, slow, '16M']);
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
      mounted = await leftovers(slow);
    }
    const mountDir = mounted.find((l) => l.includes(' mounted on '))?.split(' mounted on ')[1];
    expect(mountDir, 'the image was never mounted').toBeDefined();
    expect(settled, 'the read ended before shutdown: make the slow file bigger').toBe(false);
    // Cleanup problems surface only as warnings on stderr: keep them.
    const warnings: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
      warnings.push(String(chunk));
      return write(chunk, ...rest);
    }) as typeof process.stderr.write;
    try {
      await shutdown();
      // The CLI exits right after shutdown(): by then nothing may be mounted.
      expect((await leftovers(slow)).filter((l) => l.includes(' mounted on '))).toEqual([]);
      await reading;
    } finally {
      process.stderr.write = write;
      await reading;
      if (mountDir) strayDirs.push(mountDir);
    }
    expect(warnings.filter((w) => /unmount|umount/.test(w))).toEqual([]);
    // Once the read's last file is closed, the loop device is gone too (autoclear).
    expect(await leftovers(slow)).toEqual([]);
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
    expect(await leftovers(bad)).toEqual([]);
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
