// Where a tar's file contents are staged (src/input/tar-staging.ts): small
// files in RAM (/dev/shm) while the budget lasts, large and sparse ones and
// the rest on disk in TMPDIR, and every byte where the build reads it. On
// real archives made by GNU tar, and on a real tmpfs that fills up.
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Scope } from '../src/cleanup.js';
import { UsageError } from '../src/errors.js';
import { readTarTree } from '../src/input/tar.js';
import { defaultRamBudget, RAM_PARENT, ramBudgetFromEnv, TarStaging } from '../src/input/tar-staging.js';
import type { HashTarget } from '../src/input/stage-writer.js';
import { isRoot } from './helpers/trees.js';

const MiB = 1024 * 1024;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-staging-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Bytes of their own for file `i`. */
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function bytesOf(i: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let o = 0; o < size; o += 32) createHash('sha256').update(`${i}:${o}`).digest().copy(b, o);
  return b;
}

/** A folder of files (name → size), archived by GNU tar; returns the tar and the expected bytes. */
async function tarOf(name: string, files: [string, number][], extra: string[] = []): Promise<{ tar: string; want: Map<string, Buffer> }> {
  const root = join(work, name);
  await mkdir(root, { recursive: true });
  const want = new Map<string, Buffer>();
  for (const [i, [f, size]] of files.entries()) {
    const b = bytesOf(i, size);
    await writeFile(join(root, f), b);
    want.set(`/${f}`, b);
  }
  const tar = join(work, `${name}.tar`);
  await execa('tar', ['--format=pax', '-C', root, '-cf', tar, ...extra, '.']);
  return { tar, want };
}

async function withEnv<T>(value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const saved = process.env.PART_IMAGE_RAM_STAGING_MB;
  if (value === undefined) delete process.env.PART_IMAGE_RAM_STAGING_MB;
  else process.env.PART_IMAGE_RAM_STAGING_MB = value;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env.PART_IMAGE_RAM_STAGING_MB;
    else process.env.PART_IMAGE_RAM_STAGING_MB = saved;
  }
}

const inRam = (p: string) => p.startsWith(`${RAM_PARENT}/part-image-tar-`);

describe('the RAM budget', () => {
  it('PART_IMAGE_RAM_STAGING_MB: MiB, 0 for none, unset for the default; anything else is a usage error', () => {
    expect(ramBudgetFromEnv(undefined)).toBeUndefined();
    expect(ramBudgetFromEnv('')).toBeUndefined();
    expect(ramBudgetFromEnv('0')).toBe(0);
    expect(ramBudgetFromEnv('12')).toBe(12 * MiB);
    for (const bad of ['-1', '1.5', '1G', ' 3', 'lots']) expect(() => ramBudgetFromEnv(bad), bad).toThrow(UsageError);
    expect(() => ramBudgetFromEnv('1G')).toThrow(/PART_IMAGE_RAM_STAGING_MB must be a whole number of MiB \(0 keeps the staged files on disk\), not "1G"/);
    const err = (() => {
      try {
        ramBudgetFromEnv('1.5');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).hint).toBe('Set it to a whole number such as 512, or 0, or unset it for the default (a quarter of the memory available).');
  });

  it('by default: a quarter of the memory available, at most half of the tmpfs free', () => {
    expect(defaultRamBudget(8192 * MiB, 1024 * MiB)).toBe(512 * MiB);
    expect(defaultRamBudget(1024 * MiB, 24_000 * MiB)).toBe(256 * MiB);
    expect(defaultRamBudget(0, 100 * MiB)).toBe(0);
  });

  it(`${RAM_PARENT} is a tmpfs on this machine type (else every file is staged on disk)`, async () => {
    expect((await statfs(RAM_PARENT)).type).toBe(0x01021994);
  });
});

describe('a tar read with RAM staging', () => {
  it('puts small files in RAM and large ones on disk, every byte intact, and removes both folders with the scope', async () => {
    const files: [string, number][] = [];
    for (let i = 0; i < 60; i++) files.push([`small-${i}`, 1 + i * 997]);
    files.push(['edge-256k', 256 * 1024], ['large-300k', 300 * 1024], ['large-3m', 3 * MiB + 5]);
    const { tar, want } = await tarOf('mixed', files);
    const scope = new Scope();
    let dirs: string[] = [];
    try {
      const tree = await withEnv(undefined, () => readTarTree(tar, scope));
      for (const [path, bytes] of want) {
        const blob = tree.content.get(path);
        expect(blob, path).toBeDefined();
        expect(inRam(blob!), `${path} in RAM`).toBe(bytes.length <= 256 * 1024);
        expect((await readFile(blob!)).equals(bytes), path).toBe(true);
        const e = tree.manifest.entries.find((x) => x.path === path)!;
        expect(e.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
      }
      dirs = [...new Set([...tree.content.values()].map((b) => b.slice(0, b.lastIndexOf('/'))))];
      expect(dirs.some(inRam)).toBe(true);
      expect(dirs.some((d) => d.startsWith(tmpdir()))).toBe(true);
    } finally {
      await scope.close();
    }
    for (const d of dirs) expect(existsSync(d), d).toBe(false);
  });

  it('PART_IMAGE_RAM_STAGING_MB=0 stages everything on disk', async () => {
    const { tar, want } = await tarOf('zero', [['a', 100], ['b', 5000]]);
    const scope = new Scope();
    try {
      const tree = await withEnv('0', () => readTarTree(tar, scope));
      for (const [path, bytes] of want) {
        const blob = tree.content.get(path)!;
        expect(blob.startsWith(tmpdir()), blob).toBe(true);
        expect((await readFile(blob)).equals(bytes)).toBe(true);
      }
    } finally {
      await scope.close();
    }
  });

  it('a budget of 1 MiB takes the first files that fit, and the rest go to disk', async () => {
    const files: [string, number][] = [];
    for (let i = 0; i < 10; i++) files.push([`f${i}`, 200 * 1024]);
    const { tar, want } = await tarOf('budget', files);
    const scope = new Scope();
    try {
      const tree = await withEnv('1', () => readTarTree(tar, scope));
      let ram = 0;
      for (const [path, bytes] of want) {
        const blob = tree.content.get(path)!;
        if (inRam(blob)) ram++;
        expect((await readFile(blob)).equals(bytes), path).toBe(true);
      }
      expect(ram).toBe(5);
    } finally {
      await scope.close();
    }
  });

  it('the budget is kept per file: full means disk, and a dropped file gives its RAM back', async () => {
    const scope = new Scope();
    try {
      const st = await TarStaging.open(scope, { env: { PART_IMAGE_RAM_STAGING_MB: '1' } });
      const ha: HashTarget = {};
      const a = st.writeSmall(bytesOf(4, 400 * 1024), ha).path;
      const b = st.writeSmall(bytesOf(5, 400 * 1024)).path;
      expect(inRam(a) && inRam(b)).toBe(true);
      expect(st.counts).toEqual({ ramFiles: 2, ramBytes: 800 * 1024, diskFiles: 0 });
      // Not room for a third: it goes to disk.
      const hc: HashTarget = {};
      const staged = st.writeSmall(bytesOf(6, 400 * 1024), hc);
      const c = staged.path;
      expect(inRam(c)).toBe(false);
      // On disk at once: the caller hashes it, the staging's thread does not.
      expect(staged.hashed).toBe(false);
      // Dropped while the writer thread may still be making it: it goes all the same.
      await st.drop(a);
      expect(existsSync(a)).toBe(false);
      const hd: HashTarget = {};
      const sd = st.writeSmall(bytesOf(7, 400 * 1024), hd);
      const d = sd.path;
      expect(inRam(d)).toBe(true);
      expect(sd.hashed).toBe(true);
      expect(st.counts).toEqual({ ramFiles: 2, ramBytes: 800 * 1024, diskFiles: 1 });
      await st.drain();
      expect(st.final(d)).toBe(d);
      expect((await readFile(d)).equals(bytesOf(7, 400 * 1024))).toBe(true);
      // The staging's thread hashed the RAM files it was given a target for, and only those.
      expect(hd.sha256).toBe(sha256(bytesOf(7, 400 * 1024)));
      expect(ha.sha256).toBe(sha256(bytesOf(4, 400 * 1024)));
      expect(hc.sha256).toBeUndefined();
      expect((await readFile(b)).equals(bytesOf(5, 400 * 1024))).toBe(true);
      expect((await readFile(c)).equals(bytesOf(6, 400 * 1024))).toBe(true);
    } finally {
      await scope.close();
    }
  });

  it('a member replaced by a later one of the same name: the later bytes, and the earlier staged file is gone', async () => {
    // GNU tar -r appends the second version, so the archive holds both.
    const root = join(work, 'replaced');
    await mkdir(root, { recursive: true });
    const tar = join(work, 'replaced.tar');
    await writeFile(join(root, 'x'), bytesOf(1, 200 * 1024));
    await execa('tar', ['--format=pax', '-C', root, '-cf', tar, 'x']);
    const second = bytesOf(2, 150 * 1024);
    await writeFile(join(root, 'x'), second);
    await execa('tar', ['--format=pax', '-C', root, '-rf', tar, 'x']);
    const scope = new Scope();
    try {
      const tree = await withEnv(undefined, () => readTarTree(tar, scope));
      const blob = tree.content.get('/x')!;
      expect(inRam(blob)).toBe(true);
      expect((await readFile(blob)).equals(second)).toBe(true);
      const dir = blob.slice(0, blob.lastIndexOf('/'));
      expect(await readdir(dir)).toEqual([blob.slice(dir.length + 1)]);
    } finally {
      await scope.close();
    }
  });

  it('a tmpfs that another program fills after the budget was measured: the file goes to disk, and so do the ones after it', async () => {
    expect(isRoot, 'this test mounts a tmpfs: it needs root (CI runs as root)').toBe(true);
    const mnt = join(work, 'tiny');
    await mkdir(mnt, { recursive: true });
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    const scope = new Scope();
    try {
      const st = await TarStaging.open(scope, { ramParent: mnt, env: {} });
      expect(st.ramDir?.startsWith(`${mnt}/`)).toBe(true);
      const first = st.writeSmall(bytesOf(1, 100 * 1024)).path;
      expect(first.startsWith(`${mnt}/`)).toBe(true);
      await st.drain();
      // Someone else takes the rest of the tmpfs.
      await execa('sh', ['-c', `dd if=/dev/zero of=${mnt}/hog bs=64k 2>/dev/null; true`]);
      // Both are handed to the writer thread before it finds the tmpfs full: it writes them to disk instead.
      const h2: HashTarget = {};
      const h3: HashTarget = {};
      const second = st.writeSmall(bytesOf(2, 100 * 1024), h2).path;
      const third = st.writeSmall(bytesOf(3, 10), h3).path;
      await st.drain();
      for (const [p, b, h] of [[second, bytesOf(2, 100 * 1024), h2], [third, bytesOf(3, 10), h3]] as const) {
        expect(st.final(p).startsWith(`${st.disk}/`), st.final(p)).toBe(true);
        expect((await readFile(st.final(p))).equals(b)).toBe(true);
        // Moved to disk by the thread, and hashed all the same.
        expect(h.sha256).toBe(sha256(b));
      }
      // And every later file goes to disk at once.
      expect(st.writeSmall(bytesOf(4, 10)).path.startsWith(`${st.disk}/`)).toBe(true);
      expect((await readFile(first)).equals(bytesOf(1, 100 * 1024))).toBe(true);
      expect(st.counts).toEqual({ ramFiles: 1, ramBytes: 100 * 1024, diskFiles: 3 });
      // What the full tmpfs took of the second file is gone from it.
      expect(await readdir(st.ramDir!)).toEqual([first.slice(st.ramDir!.length + 1)]);
      await scope.close();
      expect(await readdir(mnt)).toEqual(['hog']);
    } finally {
      await scope.close();
      await execa('umount', [mnt]);
    }
  });
});
