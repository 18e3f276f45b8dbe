// The builder's debugfs script, judged by the image it makes: every entry
// type under every odd name is built with `part-image build`, then read back
// three ways that do not share code with part-image's builder:
// - part-image's own readback and diff stages (the build is accepted);
// - `debugfs -R 'rdump / OUT'` (files, folders, symlinks: names, bytes, targets);
// - the kernel, through a read-only loop mount (every type, devices and
//   fifos included, which rdump skips; owners, modes, mtimes, rdev).
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, symlink, writeFile, link, chown } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { isRoot } from './helpers/trees.js';
import { skipBoot } from './helpers/stages.js';
import { forceRelease, loopLeftovers } from './helpers/mounts.js';
import { buildPopulateScript } from '../src/build/populate.js';
import { makeManifest } from '../src/manifest/entry.js';
import type { ManifestEntry } from '../src/types.js';
import { MTIME_MAX, MTIME_MIN } from '../src/input/limits.js';

/** Names that each broke, or could break, one debugfs command form. */
export const ODD_NAMES = [
  '-x', '--', '-', '<12>', '<2>', '<0x2>', '"dq"', 'a"b', "'sq'", 'back\\slash', '\\', 'tab\there', 'two  spaces',
  ' lead', 'trail ', ' ', '#hash', '!bang', 'a=b', '=', 'ünïcödé', '日本', '@x', '$HOME', '*', '?', ';', '|', 'a b"c d',
  'L'.repeat(255), 'ü'.repeat(127), // 255 and 254 bytes
];

let work: string;
let tree: string;
let image: string;
let tmp: string;

interface Expect { type: string; mode: number; uid: number; gid: number; mtime: number; rdev?: [number, number]; data?: string; target?: string }
const expected = new Map<string, Expect>();

function sha(b: Buffer | string) {
  return createHash('sha256').update(b).digest('hex');
}

async function makeOddTree(root: string): Promise<void> {
  if (!isRoot) throw new Error('this test needs root (devices, owners); CI runs as root');
  const put = (p: string, e: Expect) => expected.set(p, e);
  await mkdir(root);
  for (const folder of ['dir', 'file', 'hard', 'sym', 'char', 'block', 'fifo', 'nest']) await mkdir(join(root, folder));
  let i = 0;
  for (const name of ODD_NAMES) {
    i++;
    const uid = 1000 + i;
    const mtimes = [MTIME_MIN, -1, 0, 2 ** 31 - 1, 2 ** 31, 2 ** 32, MTIME_MAX, 1_700_000_000 + i];
    const mtime = mtimes[i % mtimes.length];
    await mkdir(join(root, 'dir', name));
    await chown(join(root, 'dir', name), uid, uid + 1);
    put(`/dir/${name}`, { type: 'dir', mode: 0o755, uid, gid: uid + 1, mtime });
    await writeFile(join(root, 'file', name), `content of ${name}\n`);
    put(`/file/${name}`, { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, data: `content of ${name}\n` });
    await link(join(root, 'file', name), join(root, 'hard', name));
    put(`/hard/${name}`, { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, data: `content of ${name}\n` });
    await symlink(`../target/${name}`, join(root, 'sym', name));
    put(`/sym/${name}`, { type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime, target: `../target/${name}` });
    // A major/minor above 65535 goes through `sif block[1]` (debugfs mknod stops at 65535).
    const minor = i % 3 === 0 ? 70_000 + i : i;
    await execa('mknod', ['-m', '640', join(root, 'char', name), 'c', String(i % 2 ? 300 : 1), String(minor)]);
    put(`/char/${name}`, { type: 'char', mode: 0o640, uid: 0, gid: 0, mtime, rdev: [i % 2 ? 300 : 1, minor] });
    await execa('mknod', ['-m', '600', join(root, 'block', name), 'b', '7', String(i)]);
    put(`/block/${name}`, { type: 'block', mode: 0o600, uid: 0, gid: 0, mtime, rdev: [7, i] });
    await execa('mkfifo', ['-m', '620', join(root, 'fifo', name)]);
    put(`/fifo/${name}`, { type: 'fifo', mode: 0o620, uid: 0, gid: 0, mtime });
    // A folder with the odd name holding an entry with the same name: cd into it.
    await mkdir(join(root, 'nest', name));
    await writeFile(join(root, 'nest', name, name), name);
    put(`/nest/${name}/${name}`, { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, data: name });
    for (const p of [`/dir/${name}`, `/file/${name}`, `/sym/${name}`, `/char/${name}`, `/block/${name}`, `/fifo/${name}`, `/nest/${name}/${name}`]) {
      // touch, not fs.lutimes: Node takes a negative time for "now".
      await execa('touch', ['-h', '-d', `@${mtime}`, join(root, p)]);
    }
  }
  await writeFile(join(root, 'file', 'xattrs'), 'x');
  await execa('setfattr', ['-n', 'user.-dash', '-v', 'v1', join(root, 'file', 'xattrs')]);
  await execa('setfattr', ['-n', 'user.<12>', '-v', 'v2', join(root, 'file', '-x')]);
}

function typeOf(st: Awaited<ReturnType<typeof lstat>>): string {
  if (st.isDirectory()) return 'dir';
  if (st.isFile()) return 'file';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-populate-'));
  tmp = join(work, 'tmp');
  await mkdir(tmp);
  tree = join(work, 'tree');
  await makeOddTree(tree);
  image = join(work, 'odd.img');
  const r = await runCli(['build', ...skipBoot(), '--input', tree, '--output', image, '--free-mb', '8'], { env: { TMPDIR: tmp } });
  if (r.exitCode !== 0) throw new Error(`build failed (${r.exitCode}):\n${r.stdout}\n${r.stderr}`);
}, 300_000);
afterAll(async () => {
  await forceRelease(image).catch(() => undefined);
  for (const f of ['pax', 'gnu']) await forceRelease(join(work, `odd-${f}.img`)).catch(() => undefined);
  await rm(work, { recursive: true, force: true });
});

describe('odd names, built and read back', () => {
  it('was accepted by part-image (its readback and diff found the tree), and left nothing in TMPDIR', async () => {
    expect(await readdir(tmp)).toEqual([]);
    expect((await readdir(work)).filter((f) => f.includes('.part-image-') || f.endsWith('.rejected'))).toEqual([]);
  });

  it('rdump copies out every file, folder and symlink under its own name, with its bytes and target', async () => {
    const out = join(work, 'rdump');
    await mkdir(out);
    const r = await execa('debugfs', ['-R', `rdump / ${out}`, image]);
    expect(r.stderr.split('\n').filter((l) => l && !/^debugfs \d/.test(l))).toEqual([]);
    let checked = 0;
    for (const [p, e] of expected) {
      if (!['file', 'dir', 'symlink'].includes(e.type)) continue;
      const host = join(out, p);
      const st = await lstat(host);
      expect(typeOf(st), p).toBe(e.type);
      if (e.type === 'file') expect(sha(await readFile(host)), p).toBe(sha(e.data!));
      if (e.type === 'symlink') expect(await readlink(host), p).toBe(e.target);
      checked++;
    }
    // rdump skips devices and fifos: the folders are there, empty.
    expect(await readdir(join(out, 'char'))).toEqual([]);
    expect(await readdir(join(out, 'fifo'))).toEqual([]);
    expect(checked).toBe(ODD_NAMES.length * 5);
  });

  it('the kernel sees every entry with its type, mode, owner, mtime and device number', async () => {
    await kernelCheck(image);
  });

  // pax: names and negative mtimes in pax records; gnu: long names in 'L'
  // headers and negative mtimes in base-256, which tar-stream alone misreads.
  for (const format of ['pax', 'gnu']) {
    it(`the same tree as a GNU tar (--format=${format}) builds to the same entries`, async () => {
      const tar = join(work, `odd-${format}.tar`);
      await execa('tar', [`--format=${format}`, ...(format === 'pax' ? ['--xattrs', '--xattrs-include=*'] : []), '-C', tree, '-cf', tar, '.']);
      const fromTar = join(work, `odd-${format}.img`);
      const r = await runCli(['build', ...skipBoot(), '--input', tar, '--output', fromTar, '--free-mb', '8'], { env: { TMPDIR: tmp } });
      expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
      expect(await readdir(tmp)).toEqual([]);
      await kernelCheck(fromTar, format === 'pax');
    });
  }
});

async function kernelCheck(img: string, xattrs = true): Promise<void> {
  const mnt = await mkdtemp(join(work, 'mnt-'));
  await execa('mount', ['-o', 'loop,ro', img, mnt]);
  try {
    let checked = 0;
    for (const [p, e] of expected) {
      const st = await lstat(join(mnt, p), { bigint: true });
      const where = `${p} (${JSON.stringify(p)})`;
      expect(typeOf(st as never), where).toBe(e.type);
      if (e.type !== 'symlink') expect(Number(st.mode & 0o7777n), where).toBe(e.mode);
      expect([Number(st.uid), Number(st.gid)], where).toEqual([e.uid, e.gid]);
      expect(Number(st.mtimeNs / 1_000_000_000n) - (st.mtimeNs < 0n && st.mtimeNs % 1_000_000_000n !== 0n ? 1 : 0), where).toBe(e.mtime);
      if (e.rdev) {
        const r = st.rdev;
        const major = Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & 0xfffff000n));
        const minor = Number((r & 0xffn) | ((r >> 12n) & 0xffffff00n));
        expect([major, minor], where).toEqual(e.rdev);
      }
      if (e.type === 'file') expect(sha(await readFile(join(mnt, p))), where).toBe(sha(e.data!));
      if (e.type === 'file' && p.startsWith('/file/')) expect(Number(st.nlink), where).toBe(2);
      checked++;
    }
    expect(checked).toBe(expected.size);
    if (xattrs) {
      const x = await execa('getfattr', ['-d', '-m', '-', join(mnt, 'file', 'xattrs'), join(mnt, 'file', '-x')]);
      expect(x.stdout).toContain('user.-dash="v1"');
      expect(x.stdout).toContain('user.<12>="v2"');
    }
  } finally {
    await execa('umount', [mnt]);
  }
  expect(await loopLeftovers(img)).toEqual([]);
}

describe('the script forms (what the image tests above rely on)', () => {
  it('creates every entry by its bare name in its own folder (entered by inode), sets fields on <N>, and writes mtime -1 in two steps', async () => {
    const m = makeManifest([
      { path: '/', type: 'dir', mode: '0755', uid: 0, gid: 0 },
      { path: '/dev', type: 'dir', mode: '0755', uid: 0, gid: 0 },
      { path: '/dev/-x', type: 'fifo', mode: '0600', uid: 5, gid: 0, mtime: -1 },
    ]);
    const commands: string[] = [];
    const { reported } = await buildPopulateScript(m, new Map(), { now: 1_700_000_000, workDir: work }, { inodeCount: 1024, inodesPerGroup: 1024, firstIno: 11, blockSize: 4096 }, (c) => commands.push(c));
    expect(reported).toEqual([13]);
    expect(commands).toEqual(expect.arrayContaining(['cd <12>', 'mknod -x p', 'sif <13> uid 5', 'sif <13> mtime @4294967295', 'sif <13> mtime_extra 0']));
  });

  it('refuses, naming the entry, a file whose content lives at a host path longer than a debugfs line', async () => {
    const m = makeManifest([
      { path: '/', type: 'dir', mode: '0755', uid: 0, gid: 0 },
      { path: '/f', type: 'file', mode: '0644', uid: 0, gid: 0, size: 0 },
    ]);
    const far = `/${Array.from({ length: 40 }, () => 'p'.repeat(250)).join('/')}/f`;
    const emitted: string[] = [];
    await expect(buildPopulateScript(m, new Map([['/f', far]]), { now: 1_700_000_000, workDir: work }, { inodeCount: 1024, inodesPerGroup: 1024, firstIno: 11, blockSize: 4096 }, (c) => emitted.push(c)))
      .rejects.toThrow(/"\/f": its path or symlink target makes a debugfs command of 100\d\d bytes, and debugfs reads at most 8190/);
    expect(emitted.some((c) => c.startsWith('write'))).toBe(false);
  });
});

// debugfs's ln does not grow a full folder ("make_link: No free space in the
// directory"), where write, mkdir, symlink and mknod do: 50,000 hard links in
// one folder failed the build. populate.ts adds a block before a link could
// find no room.
describe('hard links that fill folders', () => {
  it('builds a folder of 1,500 links, with names of 1 to 200 bytes and files between them, and reads it back whole', async () => {
    const root = join(work, 'links-tree');
    await mkdir(join(root, 'src'), { recursive: true });
    await mkdir(join(root, 'links'));
    await mkdir(join(root, 'only-links'));
    for (let i = 0; i < 50; i++) await writeFile(join(root, 'src', `f${i}`), `content ${i}\n`);
    for (let k = 0; k < 1500; k++) {
      const name = `${k}-${'n'.repeat(k % 200)}`.slice(0, 1 + (k % 200));
      const unique = `${name}.${k}`;
      await link(join(root, 'src', `f${k % 50}`), join(root, 'links', unique));
      if (k % 3 === 0) await writeFile(join(root, 'links', `plain-${k}-${'p'.repeat(k % 100)}`), `plain ${k}\n`);
      if (k < 600) await link(join(root, 'src', `f${k % 50}`), join(root, 'only-links', `l${k}`));
    }
    const img = join(work, 'links.img');
    const r = await runCli(['build', ...skipBoot(), '--input', root, '--output', img], { env: { TMPDIR: tmp } });
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout + r.stderr).toMatch(/diff .*0 differences/);
    // Every link is there, on its group's inode, with the group's link count.
    const ls = await execa('debugfs', ['-R', 'ls -l /links', img], { env: { LC_ALL: 'C' } });
    expect(ls.stdout.split('\n').filter((l) => /\.\d+\s*$/.test(l))).toHaveLength(1500);
    const st = await execa('debugfs', ['-R', 'stat /src/f7', img], { env: { LC_ALL: 'C' } });
    expect(st.stdout).toMatch(/Links: 43 /); // itself, 30 in links/ and 12 in only-links/
    expect((await execa('e2fsck', ['-fn', img], { reject: false })).exitCode).toBe(0);
    await rm(img, { force: true });
  }, 300_000);

  it('adds the block before the first link of a folder and again each time its names since could fill one', async () => {
    const entries: ManifestEntry[] = [
      { path: '/', type: 'dir', mode: '0755', uid: 0, gid: 0 },
      { path: '/a', type: 'file', mode: '0644', uid: 0, gid: 0, size: 1, nlink: 401 },
      { path: '/d', type: 'dir', mode: '0755', uid: 0, gid: 0 },
    ];
    // 400 links of 24-byte entries (16-byte names): 170 fit in the 4084 bytes of a block.
    for (let k = 0; k < 400; k++) entries.push({ path: `/d/link-${String(k).padStart(11, '0')}`, type: 'file', mode: '0644', uid: 0, gid: 0, size: 1, hardlink: '/a' });
    const commands: string[] = [];
    await buildPopulateScript(makeManifest(entries), new Map([['/a', join(work, 'a')]]), { now: 1_700_000_000, workDir: work },
      { inodeCount: 1024, inodesPerGroup: 1024, firstIno: 11, blockSize: 4096 }, (c) => commands.push(c));
    const expands = commands.map((c, i) => [c, i] as const).filter(([c]) => c.startsWith('expand_dir'));
    expect(expands.map(([c]) => c)).toEqual(['expand_dir <13>', 'expand_dir <13>', 'expand_dir <13>']);
    // Each one right before the ln of links 0, 170 and 340.
    expect(expands.map(([, i]) => commands[i + 1])).toEqual(['ln <12> link-00000000000', 'ln <12> link-00000000170', 'ln <12> link-00000000340']);
  });
});
