// readTarTree against real archives (GNU tar, bsdtar, gzip, xz, zstd) and
// hand-made hostile ones.
import { debianRootTar } from './helpers/debian-root.js';
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { extract as tarExtract } from 'tar-stream';
import { readTarTree } from '../src/input/tar.js';
import { RAM_PARENT } from '../src/input/tar-staging.js';
import { RUN_TAG } from '../src/stale.js';
import { parsePaxRecords } from '../src/input/tar-pax.js';
import { readDirTree } from '../src/walk/dir.js';
import { Scope } from '../src/cleanup.js';
import { InputError } from '../src/errors.js';
import { diffManifests } from '../src/manifest/diff.js';
import type { InputTree, ManifestEntry } from '../src/types.js';
import { makeSampleTree } from './helpers/trees.js';

// ---------------------------------------------------------------------------
// A raw tar writer, for archives no tool would write.

interface RawMember {
  name: string;
  /** typeflag: 0 file, 1 hardlink, 2 symlink, 3 char, 4 block, 5 dir, 6 fifo. */
  type?: string;
  data?: Buffer | string;
  linkname?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  /** An 'x' extended header before the member, values as raw bytes. */
  pax?: [string, Buffer | string][];
  /** A 'g' global header before the member. */
  globalPax?: [string, Buffer | string][];
}

function octal(b: Buffer, off: number, len: number, n: number): void {
  b.write(n.toString(8).padStart(len - 1, '0') + '\0', off, len, 'latin1');
}

function tarHeader(name: string, type: string, size: number, m: Partial<RawMember> = {}): Buffer {
  const b = Buffer.alloc(512);
  Buffer.from(name, 'utf8').copy(b, 0, 0, 100);
  octal(b, 100, 8, m.mode ?? (type === '5' ? 0o755 : 0o644));
  octal(b, 108, 8, m.uid ?? 0);
  octal(b, 116, 8, m.gid ?? 0);
  octal(b, 124, 12, size);
  octal(b, 136, 12, m.mtime ?? 1_700_000_000);
  b.fill(0x20, 148, 156);
  b.write(type, 156, 1, 'latin1');
  Buffer.from(m.linkname ?? '', 'utf8').copy(b, 157, 0, 100);
  b.write('ustar\0', 257, 'latin1');
  b.write('00', 263, 'latin1');
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return b;
}

function fixChecksum(tar: Buffer, offset: number): void {
  const b = tar.subarray(offset, offset + 512);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
}

function paxData(records: [string, Buffer | string][]): Buffer {
  return Buffer.concat(records.map(([k, v]) => {
    const body = Buffer.concat([Buffer.from(` ${k}=`, 'utf8'), Buffer.isBuffer(v) ? v : Buffer.from(v, 'utf8'), Buffer.from('\n')]);
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    return Buffer.concat([Buffer.from(String(len)), body]);
  }));
}

function padded(data: Buffer): Buffer {
  return Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

function rawTar(members: RawMember[], opts: { end?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    if (m.globalPax) {
      const d = paxData(m.globalPax);
      parts.push(tarHeader('GlobalHead.0', 'g', d.length), padded(d));
    }
    if (m.pax) {
      const d = paxData(m.pax);
      parts.push(tarHeader('PaxHeader/x', 'x', d.length), padded(d));
    }
    const data = Buffer.from(m.data ?? '');
    parts.push(tarHeader(m.name, m.type ?? '0', data.length, m), padded(data));
  }
  if (opts.end !== false) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------

let work: string;
const scopes: Scope[] = [];

async function read(path: string, opts?: { hash?: boolean }): Promise<InputTree> {
  const scope = new Scope();
  scopes.push(scope);
  return readTarTree(path, scope, opts);
}

async function readError(path: string): Promise<InputError> {
  const scope = new Scope();
  try {
    await readTarTree(path, scope);
  } catch (err) {
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).exitCode).toBe(2);
    return err as InputError;
  } finally {
    await scope.close();
  }
  throw new Error(`expected ${path} to be refused`);
}

async function writeTar(name: string, members: RawMember[], opts?: { end?: boolean }): Promise<string> {
  const p = join(work, name);
  await writeFile(p, rawTar(members, opts));
  return p;
}

function entry(tree: InputTree, path: string): ManifestEntry | undefined {
  return tree.manifest.entries.find((e) => e.path === path);
}

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-tar-test-'));
});

afterAll(async () => {
  for (const s of scopes) await s.close();
  await rm(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------

describe('sample tree through real tar tools', () => {
  let tree: string;
  let dirTree: InputTree;

  beforeAll(async () => {
    tree = join(work, 'sample');
    await mkdir(tree);
    await makeSampleTree(tree);
    await writeFile(join(tree, 'srv/bigger.bin'), Buffer.alloc(3 * 1024 * 1024 + 17, 0xab)); // streamed, not buffered
    dirTree = await readDirTree(tree);
  });

  const gnuArgs = ['--xattrs', '--xattrs-include=*', '--acls', '--numeric-owner', '--format=pax'];

  it('GNU tar --format=pax --xattrs --acls: the same manifest as the directory', async () => {
    const tarPath = join(work, 'gnu.tar');
    await execa('tar', [...gnuArgs, '-C', tree, '-cf', tarPath, '.']);
    const t = await read(tarPath);
    expect(t.kind).toBe('tar');
    expect(diffManifests(dirTree.manifest, t.manifest)).toEqual([]);
    expect(t.manifest.entries.map((e) => e.path)).toEqual(dirTree.manifest.entries.map((e) => e.path));

    // A few fields directly, so that a shared bug in both readers would show.
    expect(entry(t, '/srv/owned')?.xattrs).toEqual({ 'user.bin': '00ff10', 'user.note': Buffer.from('hello').toString('hex') });
    expect(entry(t, '/srv/big.bin')?.xattrs?.['system.posix_acl_access']).toBe(
      '0200000001000600ffffffff02000400d204000004000400ffffffff10000400ffffffff20000400ffffffff',
    );
    expect(entry(t, '/usr/bin/tool')?.mode).toBe('4755');
    expect(entry(t, '/usr/bin/group-tool')?.mode).toBe('2711');
    expect(entry(t, '/tmp')?.mode).toBe('1777');
    expect(entry(t, '/srv/hard-a')).toMatchObject({ nlink: 2 });
    expect(entry(t, '/srv/hard-b')).toMatchObject({ nlink: 2, hardlink: '/srv/hard-a' });
    expect(entry(t, '/srv/short-link')).toMatchObject({ type: 'symlink', target: '../usr/bin/tool', size: 15 });
    expect(entry(t, '/srv/fifo')?.type).toBe('fifo');
    expect(entry(t, '/srv/odd names/ünïcödé/naïve.txt')?.sha256).toBe(sha('unicode\n'));
    expect(entry(t, '/usr/bin/pinglike')?.xattrs?.['security.capability']).toMatch(/^0100000200200000/);
    expect(entry(t, '/dev/null')).toMatchObject({ type: 'char', rdev: '1,3', mode: '0666' });
    expect(entry(t, '/dev/loop9')).toMatchObject({ type: 'block', rdev: '7,9', mode: '0660' });
    expect(entry(t, '/srv/owned')).toMatchObject({ uid: 1000, gid: 1001 });

    // Content: one blob per inode, byte-identical to the source.
    for (const [p, blob] of t.content) {
      expect(sha(await readFile(blob)), p).toBe(entry(t, p)?.sha256);
    }
    expect(t.content.get('/srv/hard-a')).toBe(t.content.get('/srv/hard-b'));
    expect(await readFile(t.content.get('/srv/bigger.bin')!)).toEqual(await readFile(join(tree, 'srv/bigger.bin')));
    expect([...t.content.keys()].sort()).toEqual([...dirTree.content.keys()].sort());
  });

  it('gzip-compressed, detected by its magic bytes, not by its name', async () => {
    const tarPath = join(work, 'gnu.tar');
    const gzPath = join(work, 'gzipped-but-named.tar');
    await execa('sh', ['-c', 'gzip -c "$1" > "$2"', 'sh', tarPath, gzPath]);
    const t = await read(gzPath);
    expect(diffManifests(dirTree.manifest, t.manifest)).toEqual([]);
  });

  it('bsdtar --xattrs --acls (LIBARCHIVE.xattr, comma ACL text with ids, GNU sparse 1.0): the same manifest', async () => {
    const tarPath = join(work, 'bsd.tar');
    await execa('bsdtar', ['--xattrs', '--acls', '--numeric-owner', '--format=pax', '-C', tree, '-cf', tarPath, '.']);
    // bsdtar stores the sparse file as GNU sparse 1.0 and the ACL only as text.
    const raw = await readFile(tarPath);
    expect(raw.includes('GNU.sparse.major=1')).toBe(true);
    expect(raw.includes('SCHILY.acl.access=')).toBe(true);
    expect(raw.includes('SCHILY.xattr.system.posix_acl_access')).toBe(false);
    const t = await read(tarPath);
    expect(diffManifests(dirTree.manifest, t.manifest)).toEqual([]);
    expect(await readFile(t.content.get('/srv/sparse.bin')!)).toEqual(await readFile(join(tree, 'srv/sparse.bin')));
  });

  it('GNU tar --acls without --xattrs: ACLs from SCHILY.acl.access text alone', async () => {
    const tarPath = join(work, 'gnu-acl-only.tar');
    await execa('tar', ['--acls', '--numeric-owner', '--format=pax', '-C', tree, '-cf', tarPath, '.']);
    const raw = await readFile(tarPath);
    expect(raw.includes('SCHILY.xattr.')).toBe(false);
    const t = await read(tarPath);
    expect(entry(t, '/srv/big.bin')?.xattrs).toEqual(entry(dirTree, '/srv/big.bin')?.xattrs);
    // Minimal ACLs (every file has one in this archive) leave no xattr.
    expect(entry(t, '/etc/os-release')?.xattrs).toBeUndefined();
  });

  it('usedMb follows the du -sm rule (4 KiB blocks per file, per directory)', async () => {
    const t = await read(join(work, 'gnu.tar'));
    // 3 MiB + the 1 MiB sparse file counted whole + small files: 5 MiB.
    expect(t.usedMb).toBe(5);
  });
});

describe('ACL texts with names', () => {
  it('resolves names through the archive\'s own /etc/passwd and /etc/group, and refuses unknown ones', async () => {
    const d = join(work, 'acl-names');
    await mkdir(join(d, 'etc'), { recursive: true });
    await writeFile(join(d, 'f'), 'x');
    // Host names; GNU tar writes names, not ids, into SCHILY.acl.access.
    await execa('setfacl', ['-m', 'u:bin:rw-,g:adm:r--', join(d, 'f')]);
    const withoutDb = join(work, 'acl-names-nodb.tar');
    await execa('tar', ['--acls', '--format=pax', '-C', d, '-cf', withoutDb, '.']);
    expect((await readFile(withoutDb)).includes('user:bin:rw-')).toBe(true);
    const err = await readError(withoutDb);
    expect(err.message).toMatch(/"\.\/f".*SCHILY\.acl\.access.*bin/);
    expect(err.hint).toMatch(/--xattrs/);

    // The tree's own database says bin is 7 and adm is 42.
    await writeFile(join(d, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\nbin:x:7:7::/bin:/usr/sbin/nologin\n');
    await writeFile(join(d, 'etc/group'), 'root:x:0:\nadm:x:42:\n');
    const withDb = join(work, 'acl-names-db.tar');
    await execa('tar', ['--acls', '--format=pax', '-C', d, '-cf', withDb, '.']);
    const t = await read(withDb);
    expect(entry(t, '/f')?.xattrs?.['system.posix_acl_access']).toBe(
      '0200000001000600ffffffff0200060007000000' + '04000400ffffffff080004002a000000' + '10000600ffffffff20000400ffffffff',
    );
  });
});

describe('GNU sparse files', () => {
  let sp: string;
  beforeAll(async () => {
    sp = join(work, 'sparse-src');
    await mkdir(sp);
    const f = join(sp, 'x');
    await writeFile(f, 'head');
    await execa('sh', ['-c', 'printf middle | dd of="$1" bs=1 seek=70000 conv=notrunc status=none && truncate -s 300000 "$1"', 'sh', f]);
  });

  for (const version of ['0.0', '0.1', '1.0']) {
    it(`format ${version} is reassembled, holes and all`, async () => {
      const tarPath = join(work, `sparse-${version}.tar`);
      await execa('tar', ['--sparse', `--sparse-version=${version}`, '--format=pax', '-C', sp, '-cf', tarPath, 'x']);
      const t = await read(tarPath);
      const original = await readFile(join(sp, 'x'));
      expect(t.manifest.entries.map((e) => e.path)).toEqual(['/', '/x']);
      expect(entry(t, '/x')).toMatchObject({ type: 'file', size: 300000, sha256: sha(original) });
      expect(await readFile(t.content.get('/x')!)).toEqual(original);
    });
  }

  it('old GNU sparse (--format=gnu) is refused with what to do', async () => {
    const tarPath = join(work, 'sparse-oldgnu.tar');
    await execa('tar', ['--sparse', '--format=gnu', '-C', sp, '-cf', tarPath, 'x']);
    const err = await readError(tarPath);
    expect(err.message).toMatch(/"x".*cannot store/);
    expect(err.hint).toMatch(/without --sparse/);
  });

  it('an unknown sparse version is refused', async () => {
    const p = await writeTar('sparse-2.0.tar', [{ name: 'GNUSparseFile.0/x', data: 'abc', pax: [['GNU.sparse.major', '2'], ['GNU.sparse.minor', '0'], ['GNU.sparse.name', 'x']] }]);
    const err = await readError(p);
    expect(err.message).toMatch(/"x" is a GNU sparse file/);
    expect(err.hint).toMatch(/without --sparse/);
  });
});

describe('paths', () => {
  it('gives archives without a "./" entry a root 0755 0:0 and creates missing parents implicitly', async () => {
    const t = await read(await writeTar('implicit.tar', [{ name: 'usr/bin/x', data: 'hi', mode: 0o700, uid: 5, gid: 6 }]));
    expect(t.manifest.entries).toEqual([
      { path: '/', type: 'dir', mode: '0755', uid: 0, gid: 0 },
      { path: '/usr', type: 'dir', mode: '0755', uid: 0, gid: 0 },
      { path: '/usr/bin', type: 'dir', mode: '0755', uid: 0, gid: 0 },
      { path: '/usr/bin/x', type: 'file', mode: '0700', uid: 5, gid: 6, size: 2, sha256: sha('hi'), mtime: 1_700_000_000 },
    ]);
  });

  it('normalises "./usr/bin/", "usr/bin" and "/usr/bin"; a later entry wins', async () => {
    const t = await read(await writeTar('normalise.tar', [
      { name: './', type: '5', mode: 0o700 },
      { name: './usr/bin/', type: '5', mode: 0o711 },
      { name: 'usr/bin/tool', data: 'a' },
      { name: 'usr/bin', type: '5', mode: 0o750, uid: 3 },
      { name: '/abs/ok-treated-relative', data: 'abs' },
      { name: 'a/./b/../c', data: 'dots' },
    ]));
    expect(entry(t, '/')).toMatchObject({ mode: '0700' });
    expect(entry(t, '/usr/bin')).toMatchObject({ mode: '0750', uid: 3 });
    expect(entry(t, '/usr/bin/tool')?.sha256).toBe(sha('a')); // a directory listed twice keeps its children
    expect(entry(t, '/abs/ok-treated-relative')?.sha256).toBe(sha('abs'));
    expect(entry(t, '/abs')).toMatchObject({ type: 'dir', mode: '0755' });
    expect(entry(t, '/a/c')?.sha256).toBe(sha('dots'));
    expect(entry(t, '/a/b')).toBeUndefined();
  });

  it('a file listed twice: the later wins, a hardlink taken in between keeps the old inode', async () => {
    const t = await read(await writeTar('twice.tar', [
      { name: 'a', data: 'one' },
      { name: 'b', type: '1', linkname: 'a' },
      { name: 'a', data: 'two', mode: 0o600 },
      { name: 'c', data: 'gone' },
      { name: 'c', data: 'kept' },
    ]));
    expect(entry(t, '/a')).toMatchObject({ sha256: sha('two'), mode: '0600' });
    expect(entry(t, '/a')?.nlink).toBeUndefined();
    expect(entry(t, '/b')).toMatchObject({ sha256: sha('one'), mode: '0644' });
    expect(entry(t, '/c')?.sha256).toBe(sha('kept'));
    // The replaced blob of "c" is gone; "a"'s first blob lives on through "b".
    const blobDir = dirname(t.content.get('/a')!);
    expect((await readdir(blobDir)).length).toBe(3);
  });

  it('a directory replaced by a file is refused, naming both members (it would drop d/x)', async () => {
    const err = await readError(await writeTar('dir-to-file.tar', [
      { name: 'd/', type: '5' },
      { name: 'd/x', data: 'x' },
      { name: 'd', data: 'now a file' },
    ]));
    expect(err.message).toMatch(/tar entry "d" \(a file\) has the same path \/d as tar entry "d\/", a directory holding "d\/x"/);
  });

  it('hard links: groups, to symlinks, and a link to a link', async () => {
    const t = await read(await writeTar('links.tar', [
      { name: 'f', data: 'data', mode: 0o755 },
      { name: 'g', type: '1', linkname: './f' },
      { name: 'h', type: '1', linkname: 'g' },
      { name: 's', type: '2', linkname: 'f' },
      { name: 's2', type: '1', linkname: 's' },
    ]));
    expect(entry(t, '/f')).toMatchObject({ nlink: 3, mode: '0755' });
    expect(entry(t, '/g')).toMatchObject({ nlink: 3, hardlink: '/f', sha256: sha('data') });
    expect(entry(t, '/h')).toMatchObject({ nlink: 3, hardlink: '/f' });
    expect(entry(t, '/s2')).toMatchObject({ type: 'symlink', target: 'f' });
    expect(new Set([t.content.get('/f'), t.content.get('/g'), t.content.get('/h')]).size).toBe(1);
  });
});

describe('refusals: nothing lands outside the root', () => {
  it('"../evil"', async () => {
    const p = await writeTar('dotdot.tar', [{ name: '../evil', data: 'x' }]);
    const err = await readError(p);
    expect(err.message).toContain('"../evil"');
    expect(err.message).toMatch(/outside the root/);
    expect(err.hint).toMatch(/tar -C ROOT/);
    expect(existsSync(join(dirname(work), 'evil'))).toBe(false);
    expect(existsSync(join(work, 'evil'))).toBe(false);
  });

  it('a ".." that climbs back above the root after a directory', async () => {
    const err = await readError(await writeTar('dotdot2.tar', [{ name: 'a/../../evil', data: 'x' }]));
    expect(err.message).toContain('"a/../../evil"');
  });

  it('a path through a symlink defined earlier', async () => {
    const outside = join(work, 'outside');
    await mkdir(outside);
    const p = await writeTar('through-link.tar', [
      { name: 'link', type: '2', linkname: outside },
      { name: 'link/passwd', data: 'root::0:0::/:/bin/sh\n' },
    ]);
    const err = await readError(p);
    expect(err.message).toContain('"link/passwd"');
    expect(err.message).toMatch(/through the symlink \/link ->/);
    expect(existsSync(join(outside, 'passwd'))).toBe(false);
  });

  it('a ".." after a symlink ("link/../x" would follow the link)', async () => {
    const err = await readError(await writeTar('link-dotdot.tar', [
      { name: 'link', type: '2', linkname: '/etc/ssh' },
      { name: 'link/../x', data: 'x' },
    ]));
    expect(err.message).toContain('"link/../x"');
  });

  it('a hard link to "../x", to a path outside the archive, or through a symlink', async () => {
    let err = await readError(await writeTar('hl-out.tar', [{ name: 'h', type: '1', linkname: '../x' }]));
    expect(err.message).toMatch(/"h".*hard link to "\.\.\/x".*outside the root/);
    err = await readError(await writeTar('hl-missing.tar', [{ name: 'h', type: '1', linkname: 'etc/shadow' }]));
    expect(err.message).toMatch(/"h".*hard link to "etc\/shadow".*not earlier in the archive/);
    err = await readError(await writeTar('hl-abs.tar', [{ name: 'h', type: '1', linkname: '/etc/shadow' }]));
    expect(err.message).toMatch(/not earlier in the archive/);
    err = await readError(await writeTar('hl-link.tar', [
      { name: 'l', type: '2', linkname: '/etc' },
      { name: 'h', type: '1', linkname: 'l/shadow' },
    ]));
    expect(err.message).toMatch(/"h".*through the symlink \/l/);
  });

  it('an entry below a regular file', async () => {
    const err = await readError(await writeTar('under-file.tar', [{ name: 'f', data: 'x' }, { name: 'f/x', data: 'y' }]));
    expect(err.message).toMatch(/"f\/x".*\/f is a file/);
  });

  it('names with a newline or a NUL', async () => {
    let err = await readError(await writeTar('newline.tar', [{ name: 'a\nb', data: 'x' }]));
    expect(err.message).toMatch(/"a\\nb" has a newline/);
    err = await readError(await writeTar('nul.tar', [{ name: 'ab', data: 'x', pax: [['path', Buffer.from('a\0b')]] }]));
    expect(err.message).toMatch(/"a\\u0000b" has a NUL/);
  });

  it('a name that is not UTF-8', async () => {
    const err = await readError(await writeTar('latin1.tar', [{ name: 'x', data: 'x', pax: [['path', Buffer.from([0x63, 0x61, 0x66, 0xe9])]] }]));
    expect(err.message).toMatch(/not valid UTF-8/);
  });

  it('a ustar name or symlink target that is not UTF-8, and an empty symlink target', async () => {
    const p = join(work, 'latin1-ustar.tar');
    const raw = rawTar([{ name: 'cafX', data: 'x' }, { name: 'l', type: '2', linkname: 'tgtX' }]);
    raw[3] = 0xe9; // "caf\xe9": the checksum counts the byte, so fix it up
    fixChecksum(raw, 0);
    await writeFile(p, raw);
    let err = await readError(p);
    expect(err.message).toMatch(/its name is not valid UTF-8/);
    const raw2 = rawTar([{ name: 'l', type: '2', linkname: 'tgtX' }]);
    raw2[157 + 3] = 0xff;
    fixChecksum(raw2, 0);
    await writeFile(p, raw2);
    err = await readError(p);
    expect(err.message).toMatch(/"l": its link target is not valid UTF-8/);
    err = await readError(await writeTar('empty-target.tar', [{ name: 'l', type: '2', linkname: '' }]));
    expect(err.message).toMatch(/"l" is a symlink with an empty target/);
  });

  it('a root that is not a directory', async () => {
    const err = await readError(await writeTar('root-file.tar', [{ name: './', data: 'x' }, { name: '.', type: '2', linkname: '/' }]));
    expect(err.message).toMatch(/root/);
  });

  describe('1,500 folders deep (each check walks up from the deepest path, not along every prefix)', () => {
    const deep = (n: number) => Array.from({ length: n }, () => 'd').join('/');
    const long = (name: string, extra: Partial<RawMember> = {}): RawMember => ({ name: 'x', pax: [['path', name]], ...extra });

    it('reads every level, with the file in each', async () => {
      const members: RawMember[] = [];
      for (let i = 1; i <= 1500; i++) {
        members.push(long(`./${deep(i)}/`, { type: '5', mode: 0o750 }));
        members.push(long(`./${deep(i)}/f`, { data: `level ${i}\n` }));
      }
      const scope = new Scope();
      try {
        const t = await readTarTree(await writeTar('deep.tar', members), scope);
        expect(t.manifest.entries).toHaveLength(3001);
        const deepest = `/${deep(1500)}`;
        expect(entry(t, deepest)).toMatchObject({ type: 'dir', mode: '0750' });
        expect(await readFile(t.content.get(`${deepest}/f`)!, 'utf8')).toBe('level 1500\n');
        expect(t.manifest.entries.filter((e) => e.type === 'dir' && e.mode === '0750')).toHaveLength(1500);
      } finally {
        await scope.close();
      }
    });

    it('parents that only a deep member implies are made, every one of them', async () => {
      const scope = new Scope();
      try {
        const t = await readTarTree(await writeTar('deep-implied.tar', [long(`${deep(1200)}/f`, { data: 'x' }), long(`${deep(600)}/g`, { data: 'y' })]), scope);
        expect(t.manifest.entries.filter((e) => e.type === 'dir')).toHaveLength(1201);
        expect(entry(t, `/${deep(600)}/g`)?.type).toBe('file');
      } finally {
        await scope.close();
      }
    });

    it('a symlink 700 deep refuses a member 1,400 deep under it, naming the symlink', async () => {
      const err = await readError(await writeTar('deep-link.tar', [
        long(`${deep(700)}`, { type: '2', linkname: '/etc' }),
        long(`${deep(1400)}/passwd`, { data: 'x' }),
      ]));
      expect(err.message).toContain(`it goes through the symlink /${deep(700)} -> /etc defined earlier in the archive`);
    });

    it('a file 10 deep refuses a member below it, and a ".." that climbs back out of a symlink is refused too', async () => {
      const viaFile = await readError(await writeTar('deep-file.tar', [long(`${deep(10)}`, { data: 'x' }), long(`${deep(900)}/y`, { data: 'y' })]));
      expect(viaFile.message).toContain(`/${deep(10)} is a file, not a directory, earlier in the archive`);
      const viaDotDot = await readError(await writeTar('deep-dotdot.tar', [
        long(`${deep(300)}/link`, { type: '2', linkname: '/' }),
        long(`${deep(300)}/link/../ok`, { data: 'y' }),
      ]));
      expect(viaDotDot.message).toContain(`it goes through the symlink /${deep(300)}/link -> / defined earlier`);
    });

    it('".." that stays inside: resolved lexically, every level checked', async () => {
      const scope = new Scope();
      try {
        const t = await readTarTree(await writeTar('deep-up.tar', [
          long(`${deep(500)}/a/`, { type: '5' }),
          long(`${deep(500)}/a/../../b`, { data: 'b' }),
          long(`${deep(3)}/${'../'.repeat(3)}top`, { data: 't' }),
        ]), scope);
        expect(entry(t, `/${deep(499)}/b`)?.type).toBe('file');
        expect(entry(t, '/top')?.type).toBe('file');
        await expect(readError(await writeTar('deep-escape.tar', [long(`${deep(3)}/${'../'.repeat(4)}etc/x`, { data: 'x' })]))).resolves.toMatchObject({
          message: expect.stringMatching(/its "\.\." leads outside the root/),
        });
      } finally {
        await scope.close();
      }
    });
  });

  it('leaves nothing behind once the scope closes', async () => {
    const scope = new Scope();
    const mine = async (parent: string) => (await readdir(parent)).filter((n) => n.startsWith(`part-image-tar-${RUN_TAG}-`)).map((n) => join(parent, n));
    const before = [...(await mine(tmpdir())), ...(await mine(RAM_PARENT))];
    const t = await readTarTree(await writeTar('cleanup.tar', [{ name: 'f', data: 'x' }, { name: 'big', data: Buffer.alloc(300 * 1024, 7) }]), scope);
    // The small file in RAM, the large one in TMPDIR.
    const ram = dirname(t.content.get('/f')!);
    expect(ram.startsWith(`${RAM_PARENT}/`)).toBe(true);
    const staging = dirname(dirname(t.content.get('/big')!));
    expect(staging.startsWith(tmpdir())).toBe(true);
    expect(await readdir(staging)).toEqual(['blobs']);
    expect(t.staged).toEqual({ ramFiles: 1, ramBytes: 1, diskFiles: 1 });
    await scope.close();
    expect(existsSync(staging)).toBe(false);
    expect(existsSync(ram)).toBe(false);
    expect([...(await mine(tmpdir())), ...(await mine(RAM_PARENT))]).toEqual(before);
  });
});

describe('pax records', () => {
  const binary = Buffer.from([0x01, 0x00, 0x00, 0x02, 0xff, 0x80, 0x0a, 0x3d, 0x00, 0xc3]);

  it('tar-stream mangles binary pax values (why readTarTree parses the raw records)', async () => {
    const ex = tarExtract();
    const seen: unknown[] = [];
    ex.on('entry', (h, s, next) => {
      seen.push((h.pax as Record<string, string>)['SCHILY.xattr.user.bin']);
      s.on('end', next);
      s.resume();
    });
    ex.end(rawTar([{ name: 'f', pax: [['SCHILY.xattr.user.bin', binary]] }]));
    await new Promise<void>((r) => ex.on('finish', () => r()));
    expect(Buffer.from(seen[0] as string, 'utf8').equals(binary)).toBe(false);
  });

  it('keeps SCHILY.xattr values byte for byte, decodes LIBARCHIVE.xattr base64 and percent-encoded names', async () => {
    const t = await read(await writeTar('xattrs.tar', [{
      name: 'f', data: 'x',
      pax: [
        ['SCHILY.xattr.security.capability', binary],
        ['SCHILY.xattr.user.a%3Db%25c', 'v'],
        ['LIBARCHIVE.xattr.user.we%20ird', Buffer.from([0xde, 0xad, 0xbe, 0xef]).toString('base64').replace(/=+$/, '')],
        ['SCHILY.xattr.user.empty', ''],
        ['RHT.security.selinux', 'system_u:object_r:bin_t:s0'],
      ],
    }]));
    expect(entry(t, '/f')?.xattrs).toEqual({
      'security.capability': binary.toString('hex'),
      'user.a=b%c': '76',
      'user.we ird': 'deadbeef',
      'security.selinux': Buffer.from('system_u:object_r:bin_t:s0\0').toString('hex'),
    });
  });

  it('takes uid, gid, mtime and path from pax over the header, and merges global headers', async () => {
    const t = await read(await writeTar('pax-fields.tar', [
      {
        name: 'short', data: 'x', uid: 1, gid: 2, globalPax: [['comment', 'built by a test'], ['SCHILY.xattr.user.g', 'global']],
        pax: [['uid', '3000000000'], ['gid', '4000000000'], ['mtime', '1712345678.987654321'], ['path', 'a/very/' + 'long/'.repeat(40) + 'name']],
      },
      { name: 'other', data: 'y', pax: [['SCHILY.xattr.user.g', '']] },
    ]));
    const long = '/a/very/' + 'long/'.repeat(40) + 'name';
    expect(entry(t, long)).toMatchObject({ uid: 3000000000, gid: 4000000000, mtime: 1712345678, xattrs: { 'user.g': '676c6f62616c' } });
    expect(entry(t, '/other')?.xattrs).toBeUndefined(); // an empty local value deletes the global one
  });

  it('parsePaxRecords refuses malformed records', () => {
    expect(() => parsePaxRecords(Buffer.from('9 a=b\n'))).toThrow(/bad pax record/);
    expect(() => parsePaxRecords(Buffer.from('x a=b\n'))).toThrow(/length/);
    expect(() => parsePaxRecords(Buffer.from('5 ab\n'))).toThrow(/without "="/);
    expect(parsePaxRecords(Buffer.from('6 a=b\n\0\0\0'))).toEqual([['a', Buffer.from('b')]]);
  });

  it('an NFSv4 ACL is refused', async () => {
    const err = await readError(await writeTar('nfs4.tar', [{ name: 'f', data: 'x', pax: [['SCHILY.acl.ace', 'owner@:rw-p--aARWcCos:-------:allow']] }]));
    expect(err.message).toMatch(/"f".*NFSv4/);
  });

  it('a malformed ACL text names the entry', async () => {
    const err = await readError(await writeTar('bad-acl.tar', [{ name: 'f', data: 'x', pax: [['SCHILY.acl.access', 'user::rw-,bogus']] }]));
    expect(err.message).toMatch(/"f".*SCHILY\.acl\.access/);
  });
});

describe('broken and compressed archives', () => {
  let good: string;
  beforeAll(async () => {
    const src = join(work, 'broken-src');
    await mkdir(src);
    await writeFile(join(src, 'a'), Buffer.alloc(20000, 1));
    await writeFile(join(src, 'b'), 'b');
    good = join(work, 'good.tar');
    await execa('tar', ['--format=pax', '-C', src, '-cf', good, '.']);
  });

  it('truncated in the middle of an entry', async () => {
    const p = join(work, 'trunc-mid.tar');
    await writeFile(p, (await readFile(good)).subarray(0, 10000));
    const err = await readError(p);
    expect(err.message).toMatch(/^not a valid tar archive: .*trunc-mid\.tar: .*truncated/);
    // The bytes do not say "compressed": no hint that they might be.
    expect(err.message).not.toMatch(/compress/i);
  });

  it('truncated at a block boundary, without the end-of-archive marker', async () => {
    const t = await read(good);
    expect(t.manifest.entries.length).toBe(3);
    const raw = await readFile(good);
    // Cut right after the last data block.
    let end = raw.length;
    while (end > 0 && raw.subarray(end - 512, end).every((b) => b === 0)) end -= 512;
    const p = join(work, 'trunc-block.tar');
    await writeFile(p, raw.subarray(0, end));
    const err = await readError(p);
    expect(err.message).toMatch(/end-of-archive marker/);
  });

  it('a truncated gzip stream', async () => {
    const gz = join(work, 'good.tar.gz');
    await execa('sh', ['-c', 'gzip -c "$1" > "$2"', 'sh', good, gz]);
    const p = join(work, 'trunc.tar.gz');
    await writeFile(p, (await readFile(gz)).subarray(0, 200));
    const err = await readError(p);
    expect(err.message).toMatch(/not a valid tar archive: .*gzip stream is truncated/);
  });

  it('xz and zstd are named, with the command to decompress', async () => {
    await execa('xz', ['-k', '-f', good]);
    let err = await readError(`${good}.xz`);
    expect(err.message).toMatch(/not a valid tar archive: .* is xz-compressed/);
    expect(err.hint).toMatch(/xz -dk/);
    await execa('zstd', ['-q', '-f', good, '-o', `${good}.zst`]);
    err = await readError(`${good}.zst`);
    expect(err.message).toMatch(/zstd-compressed/);
    expect(err.hint).toMatch(/zstd -d/);
  });

  it('garbage, and an empty file', async () => {
    const g = join(work, 'garbage.tar');
    await writeFile(g, Buffer.from('this is not a tar archive at all\n'.repeat(100)));
    let err = await readError(g);
    expect(err.message).toMatch(/^not a valid tar archive: .*(checksum|not a tar)/);
    const e = join(work, 'empty.tar');
    await writeFile(e, '');
    err = await readError(e);
    expect(err.message).toMatch(/empty/);
  });

  it('an archive with only the end marker is an empty tree', async () => {
    const p = join(work, 'only-end.tar');
    await writeFile(p, Buffer.alloc(10240));
    const t = await read(p);
    expect(t.manifest.entries).toEqual([{ path: '/', type: 'dir', mode: '0755', uid: 0, gid: 0 }]);
    expect(t.usedMb).toBe(1);
  });

  it('a missing file is an InputError', async () => {
    const err = await readError(join(work, 'does-not-exist.tar'));
    expect(err.message).toMatch(/cannot read/);
  });

  it('--no-hash leaves sha256 out but still writes the blobs', async () => {
    const t = await read(good, { hash: false });
    expect(entry(t, '/a')?.sha256).toBeUndefined();
    expect((await stat(t.content.get('/a')!)).size).toBe(20000);
  });
});

// ---------------------------------------------------------------------------

describe('Debian bookworm root tar', () => {
  let t: InputTree;
  let extracted: string;
  let DEBIAN_TAR: string;

  beforeAll(async () => {
    DEBIAN_TAR = await debianRootTar();
    const t0 = performance.now();
    t = await read(DEBIAN_TAR);
    const ms = performance.now() - t0;
    const { stdout } = await execa('tar', ['-tf', DEBIAN_TAR]);
    const members = stdout.split('\n').filter(Boolean).length;
    console.log(`readTarTree(${DEBIAN_TAR}): ${Math.round(ms)} ms, ${members} members, ${t.manifest.entries.length} manifest entries, ${t.content.size} files, usedMb ${t.usedMb}`);
    extracted = join(work, 'debian');
    await mkdir(extracted);
    // Not --acls: GNU tar 1.34 then ignores ACLs stored as SCHILY.xattr.system.posix_acl_*
    // (as mmdebstrap stores /var/log/journal's) and restores none.
    await execa('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', DEBIAN_TAR, '-C', extracted]);
  });

  it('has every member and the capability of ping', async () => {
    const { stdout } = await execa('tar', ['-tf', DEBIAN_TAR]);
    const names = new Set(stdout.split('\n').filter(Boolean).map((n) => ('/' + n.replace(/^\.\/?/, '')).replace(/\/$/, '') || '/'));
    expect(t.manifest.entries.length).toBe(names.size);
    const { stdout: cap } = await execa('getfattr', ['--absolute-names', '-n', 'security.capability', '-e', 'hex', join(extracted, 'usr/bin/ping')]);
    const hex = /=0x([0-9a-f]+)/.exec(cap)![1];
    expect(hex).toMatch(/^0100000200200000/);
    expect(entry(t, '/usr/bin/ping')?.xattrs?.['security.capability']).toBe(hex);
  });

  it('equals the manifest of the same tree extracted by GNU tar', async () => {
    const d = await readDirTree(extracted);
    expect(diffManifests(d.manifest, t.manifest)).toEqual([]);
    expect(Math.abs(d.usedMb - t.usedMb)).toBeLessThanOrEqual(1);
  });
});
