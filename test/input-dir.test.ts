// readDirTree on a real sample tree: modes, owners, xattrs, ACLs, hardlinks,
// devices, symlinks, sparse content, sockets, odd names, du-compatible size,
// and the errors for unreadable input. Root-only parts fail (not skip)
// without root: CI runs as root.
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatRdev, readDirTree } from '../src/walk/dir.js';
import { InputError } from '../src/errors.js';
import type { InputTree, ManifestEntry } from '../src/types.js';
import { isRoot, makeSampleTree } from './helpers/trees.js';

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const hex = (s: string) => Buffer.from(s).toString('hex');
const ACL_U1234_R = '0200000001000600ffffffff02000400d204000004000400ffffffff10000400ffffffff20000400ffffffff';
const ACL_DEFAULT_U5_RWX = '0200000001000700ffffffff020007000500000004000500ffffffff10000700ffffffff20000500ffffffff';
const CAP_NET_RAW_EP = '0100000200200000000000000000000000000000';

let work: string;
let root: string;
let tree: InputTree;
let server: Server;

function entry(path: string): ManifestEntry {
  const e = tree.manifest.entries.find((x) => x.path === path);
  if (!e) throw new Error(`no entry ${path}`);
  return e;
}

beforeAll(async () => {
  expect(isRoot, 'this test needs root (devices, owners, security.capability)').toBe(true);
  work = await mkdtemp(join(tmpdir(), 'pi-dir-test-'));
  root = join(work, 'root');
  await mkdir(root);
  await makeSampleTree(root);
  // Beyond the shared sample: a socket, a device with a large major/minor,
  // and a name getfattr has to quote, carrying an xattr.
  server = createServer();
  await new Promise<void>((resolve) => server.listen(join(root, 'srv/sock'), resolve));
  await execa('mknod', ['-m', '600', join(root, 'dev/big'), 'c', '300', '70000']);
  await writeFile(join(root, 'srv/new\nline\\x'), 'nl\n');
  await execa('setfattr', ['-n', 'user.odd=name', '-v', 'v', join(root, 'srv/new\nline\\x')]);
  await execa('setfacl', ['-d', '-m', 'u:5:rwx', join(root, 'etc')]);
  tree = await readDirTree(root);
});

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  if (work) await rm(work, { recursive: true, force: true });
});

describe('readDirTree', () => {
  it('records the root and every path, sorted, once', () => {
    expect(tree.kind).toBe('dir');
    expect(tree.source).toBe(root);
    const paths = tree.manifest.entries.map((e) => e.path);
    expect(paths[0]).toBe('/');
    expect(entry('/').type).toBe('dir');
    expect(new Set(paths).size).toBe(paths.length);
    expect(paths).toContain('/srv/odd names/ünïcödé/naïve.txt');
    expect(paths).toContain('/srv/odd names/file with spaces.txt');
  });

  it('keeps setuid, setgid and sticky bits as 4 octal digits', () => {
    expect(entry('/usr/bin/tool').mode).toBe('4755');
    expect(entry('/usr/bin/group-tool').mode).toBe('2711');
    expect(entry('/tmp')).toMatchObject({ type: 'dir', mode: '1777' });
  });

  it('keeps numeric owners', () => {
    expect(entry('/srv/owned')).toMatchObject({ uid: 1000, gid: 1001 });
    expect(entry('/srv/odd names')).toMatchObject({ uid: 4242, gid: 65534 });
  });

  it('hashes content, sparse holes as the zeros they read as', () => {
    expect(entry('/usr/bin/tool')).toMatchObject({
      type: 'file', size: 9, sha256: sha256(Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2, 3, 255])),
    });
    expect(entry('/etc/empty')).toMatchObject({ size: 0, sha256: sha256('') });
    const sparse = Buffer.concat([Buffer.alloc(1024 * 1024), Buffer.from('tail')]);
    expect(entry('/srv/sparse.bin')).toMatchObject({ size: sparse.length, sha256: sha256(sparse) });
    expect(entry('/srv/big.bin').sha256).toBe(sha256(Buffer.alloc(300_000, 7)));
  });

  it('reads security.capability, user xattrs and the ACL as hex of the raw value', () => {
    expect(entry('/usr/bin/pinglike').xattrs).toEqual({ 'security.capability': CAP_NET_RAW_EP });
    expect(entry('/srv/owned').xattrs).toEqual({ 'user.bin': '00ff10', 'user.note': hex('hello') });
    expect(entry('/srv/big.bin').xattrs).toEqual({ 'system.posix_acl_access': ACL_U1234_R });
    expect(entry('/srv/big.bin').mode).toBe('0644');
    expect(entry('/etc').xattrs).toEqual({ 'system.posix_acl_default': ACL_DEFAULT_U5_RWX });
    expect(entry('/srv/new\nline\\x').xattrs).toEqual({ 'user.odd=name': hex('v') });
    expect(entry('/etc/os-release').xattrs).toBeUndefined();
  });

  it('groups hardlinks under the first path', () => {
    expect(entry('/srv/hard-a')).toMatchObject({ nlink: 2 });
    expect(entry('/srv/hard-a').hardlink).toBeUndefined();
    expect(entry('/srv/hard-b')).toMatchObject({ nlink: 2, hardlink: '/srv/hard-a' });
    expect(entry('/srv/owned').nlink).toBeUndefined();
  });

  it('reads devices, fifos, sockets and symlinks without following them', () => {
    expect(entry('/dev/null')).toMatchObject({ type: 'char', mode: '0666', rdev: '1,3' });
    expect(entry('/dev/loop9')).toMatchObject({ type: 'block', mode: '0660', rdev: '7,9' });
    expect(entry('/dev/big')).toMatchObject({ type: 'char', rdev: '300,70000' });
    expect(entry('/srv/fifo').type).toBe('fifo');
    expect(entry('/srv/sock').type).toBe('socket');
    expect(entry('/srv/short-link')).toMatchObject({ type: 'symlink', target: '../usr/bin/tool', size: 15 });
    const long = '/' + 'very-long-target/'.repeat(6) + 'end';
    expect(entry('/srv/long-link')).toMatchObject({ type: 'symlink', target: long, size: long.length });
    expect(entry('/srv/short-link').sha256).toBeUndefined();
  });

  it('maps every file, and only files, to its host path', () => {
    const files = tree.manifest.entries.filter((e) => e.type === 'file').map((e) => e.path).sort();
    expect([...tree.content.keys()].sort()).toEqual(files);
    expect(tree.content.get('/usr/bin/tool')).toBe(join(root, 'usr/bin/tool'));
  });

  it('reads mtimes in seconds', async () => {
    await execa('touch', ['-h', '-d', '@1700000000', join(root, 'etc/os-release')]);
    // 999999999 ns: a double of milliseconds would round this up to ...001.
    await execa('touch', ['-h', '-d', '@1700000000.999999999', join(root, 'etc/empty')]);
    await execa('touch', ['-h', '-d', '@-1.5', join(root, 'usr/bin/group-tool')]);
    const again = await readDirTree(root, { hash: false });
    const mtime = (p: string) => again.manifest.entries.find((e) => e.path === p)?.mtime;
    expect(mtime('/etc/os-release')).toBe(1700000000);
    expect(mtime('/etc/empty')).toBe(1700000000);
    expect(mtime('/usr/bin/group-tool')).toBe(-2);
  });

  it('counts the size as du -sm does', async () => {
    const du = await execa('du', ['-sm', root]);
    expect(tree.usedMb).toBe(Number(du.stdout.split('\t')[0]));
  });

  it('leaves sha256 out with hash: false', async () => {
    const noHash = await readDirTree(root, { hash: false });
    expect(noHash.manifest.entries.some((e) => e.sha256 !== undefined)).toBe(false);
    expect(noHash.manifest.entries.map((e) => e.path)).toEqual(tree.manifest.entries.map((e) => e.path));
  });
});

describe('formatRdev', () => {
  it('decodes glibc dev_t, including majors and minors past 8 bits', () => {
    // glibc's gnu_dev_makedev.
    const makedev = (ma: bigint, mi: bigint) =>
      ((ma & 0xfffn) << 8n) | ((ma & 0xfffff000n) << 32n) | (mi & 0xffn) | ((mi & 0xffffff00n) << 12n);
    expect(formatRdev(makedev(1n, 3n))).toBe('1,3');
    expect(formatRdev(Number(makedev(300n, 70000n)))).toBe('300,70000');
    expect(formatRdev(makedev(0xfffffn, 0xfffffn))).toBe(`${0xfffff},${0xfffff}`);
    expect(formatRdev(makedev(0xffffffffn, 0xffffffffn))).toBe(`${0xffffffff},${0xffffffff}`);
    expect(formatRdev(0)).toBe('0,0');
  });
});

describe('readDirTree errors', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pi-dir-err-'));
    await chmod(dir, 0o755);
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Run `fn` with the effective uid of nobody (the worker is a forked process). */
  async function asNobody<T>(fn: () => Promise<T>): Promise<T> {
    expect(typeof process.seteuid, 'vitest must run this file in a forked process').toBe('function');
    // Tools are spawned in the current folder: it must be one nobody can enter
    // (a checkout in a 0700 temp folder is not).
    const cwd = process.cwd();
    process.chdir(dir);
    process.seteuid!(65534);
    try {
      return await fn();
    } finally {
      process.seteuid!(0);
      process.chdir(cwd);
    }
  }

  it('names an unreadable file and says what to do', async () => {
    const t = join(dir, 'file-case');
    await mkdir(join(t, 'etc'), { recursive: true });
    await chmod(t, 0o755);
    await chmod(join(t, 'etc'), 0o755);
    await writeFile(join(t, 'etc/shadow'), 'secret\n', { mode: 0o600 });
    const err = await asNobody(() => readDirTree(t)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).message).toMatch(/\/etc\/shadow .*permission denied/);
    expect((err as InputError).hint).toMatch(/root/);
    expect((err as InputError).exitCode).toBe(2);
  });

  it('names an unreadable directory', async () => {
    const t = join(dir, 'dir-case');
    await mkdir(join(t, 'locked'), { recursive: true });
    await chmod(t, 0o755);
    await writeFile(join(t, 'locked/x'), 'x');
    await chmod(join(t, 'locked'), 0o700);
    const err = await asNobody(() => readDirTree(t)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).message).toMatch(/\/locked .*permission denied/);
  });

  it('refuses a file name that is not UTF-8', async () => {
    const t = join(dir, 'name-case');
    await mkdir(t);
    await writeFile(Buffer.concat([Buffer.from(`${t}/bad-`), Buffer.from([0xff, 0xfe])]), 'x');
    const err = await readDirTree(t).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).message).toMatch(/not valid UTF-8.*bytes: 6261642dfffe/);
  });

  it('reports a missing input', async () => {
    await expect(readDirTree(join(dir, 'nope'))).rejects.toThrow(/input not found/);
  });
});
