// readImageManifest on real images made with `mke2fs -d`: the sample tree
// (every kind of entry, setuid modes, capabilities, ACLs, hardlinks, devices,
// sparse files, odd names), the same tree as ext3 and with inline_data, and a
// real Debian root. Each image is also read through a loop mount
// (readMountedImage): the two readers must agree entry for entry. Needs root
// (mknod, setcap, loop mounts): fails, does not skip, without it.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readImageManifest } from '../src/image/debugfs-reader.js';
import { readMountedImage } from '../src/image/mount-reader.js';
import { diffManifests } from '../src/manifest/diff.js';
import { withScope } from '../src/cleanup.js';
import { InputError, ToolError } from '../src/errors.js';
import { UnreadableImageError } from '../src/errors.js';
import { log } from '../src/log.js';
import { encodeDebugfsValue, quoteDebugfsArg, runDebugfs } from '../src/tools/debugfs.js';
import type { Manifest, ManifestEntry } from '../src/types.js';
import { debianRootTar } from './helpers/debian-root.js';
import { blocksOf, overwriteBlock } from './helpers/images.js';
import { isRoot, makeSampleTree } from './helpers/trees.js';

let work: string;
let tree: string;
let image: string;
let manifest: Manifest;

const entry = (path: string): ManifestEntry => {
  const e = manifest.entries.find((x) => x.path === path);
  if (!e) throw new Error(`no ${path} in the image manifest`);
  return e;
};

/** What the kernel shows for one xattr of a host file, as lowercase hex. */
async function getfattrHex(file: string, name: string): Promise<string> {
  const r = await execa('getfattr', ['-h', '--absolute-names', '-n', name, '-e', 'hex', file]);
  const m = new RegExp(`^${name.replace(/\./g, '\\.')}=0x([0-9a-f]*)$`, 'm').exec(r.stdout);
  if (!m) throw new Error(`getfattr printed no ${name} for ${file}: ${r.stdout}`);
  return m[1];
}

const sha256 = async (file: string): Promise<string> => createHash('sha256').update(await readFile(file)).digest('hex');

/** Reads `img` with both readers; they must agree on every field, mtime included. */
async function expectReadersAgree(img: string): Promise<{ debugfs: Manifest; debugfsMs: number; mountMs: number }> {
  let t = performance.now();
  const debugfs = await readImageManifest(img);
  const debugfsMs = performance.now() - t;
  t = performance.now();
  const mounted = await withScope((scope) => readMountedImage(img, scope));
  const mountMs = performance.now() - t;
  expect(diffManifests(mounted, debugfs, { compareMtime: true })).toEqual([]);
  expect(debugfs.entries).toEqual(mounted.entries);
  return { debugfs, debugfsMs, mountMs };
}

beforeAll(async () => {
  expect(isRoot, 'the sample tree (mknod, setcap) and loop mounts need root').toBe(true);
  work = await mkdtemp(join(tmpdir(), 'pi-debugfs-test-'));
  tree = join(work, 'tree');
  await mkdir(tree);
  await makeSampleTree(tree);
  image = join(work, 'sample.img');
  await execa('mke2fs', ['-q', '-t', 'ext4', '-d', tree, image, '64M']);
  manifest = await readImageManifest(image);
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('readImageManifest on the sample tree', () => {
  it('has the root, lost+found and every path of the tree, sorted', () => {
    const paths = manifest.entries.map((e) => e.path);
    expect(paths[0]).toBe('/');
    expect(entry('/')).toMatchObject({ type: 'dir', mode: '0755', uid: 0, gid: 0 });
    expect(paths).toContain('/lost+found');
    expect(paths).toEqual([...paths].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    expect(paths).toContain('/srv/odd names/ünïcödé/naïve.txt');
    expect(paths).toContain('/srv/odd names/file with spaces.txt');
  });

  it('keeps setuid, setgid and sticky bits', () => {
    expect(entry('/usr/bin/tool')).toMatchObject({ type: 'file', mode: '4755' });
    expect(entry('/usr/bin/group-tool').mode).toBe('2711');
    expect(entry('/tmp')).toMatchObject({ type: 'dir', mode: '1777' });
  });

  it('reads owners', () => {
    expect(entry('/srv/owned')).toMatchObject({ uid: 1000, gid: 1001 });
    expect(entry('/srv/odd names')).toMatchObject({ uid: 4242, gid: 65534 });
  });

  it('reads security.capability as getfattr shows it on the source', async () => {
    const want = await getfattrHex(join(tree, 'usr/bin/pinglike'), 'security.capability');
    expect(entry('/usr/bin/pinglike').xattrs).toEqual({ 'security.capability': want });
  });

  it('reads user.* xattrs, text and binary', () => {
    expect(entry('/srv/owned').xattrs).toEqual({
      'user.note': Buffer.from('hello').toString('hex'),
      'user.bin': '00ff10',
    });
  });

  it('reads the ACL in the Linux xattr format, as getfattr shows it on the source', async () => {
    const want = await getfattrHex(join(tree, 'srv/big.bin'), 'system.posix_acl_access');
    expect(want.startsWith('02000000')).toBe(true);
    expect(entry('/srv/big.bin').xattrs).toEqual({ 'system.posix_acl_access': want });
  });

  it('groups hardlinks by inode', () => {
    expect(entry('/srv/hard-a')).toMatchObject({ nlink: 2 });
    expect(entry('/srv/hard-a').hardlink).toBeUndefined();
    expect(entry('/srv/hard-b')).toMatchObject({ nlink: 2, hardlink: '/srv/hard-a' });
    expect(entry('/srv/hard-b').sha256).toBe(entry('/srv/hard-a').sha256);
  });

  it('reads devices and fifos', () => {
    expect(entry('/dev/null')).toMatchObject({ type: 'char', mode: '0666', rdev: '1,3' });
    expect(entry('/dev/loop9')).toMatchObject({ type: 'block', mode: '0660', rdev: '7,9' });
    expect(entry('/srv/fifo').type).toBe('fifo');
    expect(entry('/srv/fifo').size).toBeUndefined();
  });

  it('reads short (in-inode) and long (in-block) symlink targets; size is the target length', () => {
    expect(entry('/srv/short-link')).toMatchObject({ type: 'symlink', target: '../usr/bin/tool', size: 15 });
    const long = '/' + 'very-long-target/'.repeat(6) + 'end';
    expect(long.length).toBeGreaterThanOrEqual(60);
    expect(entry('/srv/long-link')).toMatchObject({ type: 'symlink', target: long, size: long.length });
  });

  it('hashes contents from the extent maps: sparse, big, empty, unicode and spaced names', async () => {
    for (const p of ['srv/sparse.bin', 'srv/big.bin', 'etc/empty', 'usr/bin/tool', 'srv/odd names/ünïcödé/naïve.txt', 'srv/odd names/file with spaces.txt']) {
      const host = join(tree, p);
      expect(entry(`/${p}`), p).toMatchObject({ size: (await stat(host)).size, sha256: await sha256(host) });
    }
    expect(entry('/srv/sparse.bin').size).toBe(1024 * 1024 + 4);
  });

  it('reads mtimes in seconds', async () => {
    expect(entry('/etc/os-release').mtime).toBe(Math.floor((await stat(join(tree, 'etc/os-release'))).mtimeMs / 1000));
  });

  it('skips hashing when asked, but still reads symlink targets', async () => {
    const m = await readImageManifest(image, { hash: false });
    expect(m.entries.some((e) => e.sha256 !== undefined)).toBe(false);
    expect(m.entries.find((e) => e.path === '/srv/long-link')!.target).toBe(entry('/srv/long-link').target);
    expect(m.entries.find((e) => e.path === '/srv/big.bin')!.size).toBe(300_000);
  });

  it('agrees with the loop-mount reader', async () => {
    await expectReadersAgree(image);
  });

  it('agrees with the loop-mount reader on the tree as ext3 (block maps) and with inline_data (dump fallback)', async () => {
    const ext3 = join(work, 'sample-ext3.img');
    await execa('mke2fs', ['-q', '-t', 'ext3', '-d', tree, ext3, '64M']);
    await expectReadersAgree(ext3);
    const inline = join(work, 'sample-inline.img');
    await execa('mke2fs', ['-q', '-t', 'ext4', '-O', 'inline_data', '-d', tree, inline, '64M']);
    const { debugfs } = await expectReadersAgree(inline);
    expect(debugfs.entries.find((e) => e.path === '/etc/os-release')!.sha256).toBe(await sha256(join(tree, 'etc/os-release')));
  });
});

describe('readImageManifest on an image the kernel wrote', () => {
  it('agrees with the loop-mount reader: htree directory, unwritten extents, big xattrs, long symlinks', async () => {
    const img = join(work, 'kernel.img');
    await execa('mke2fs', ['-q', '-t', 'ext4', '-b', '4096', img, '64M']);
    const mnt = join(work, 'kernel-mnt');
    await mkdir(mnt);
    await execa('mount', ['-o', 'loop', img, mnt]);
    try {
      await execa('sh', ['-euc', `
        cd "$1"
        mkdir big && cd big
        i=0; while [ $i -lt 1500 ]; do echo $i > "file-$i"; i=$((i+1)); done
        rm file-1??; mv file-700 "renamed one"; cd ..
        fallocate -l 1M falloc; printf x | dd of=falloc bs=1 seek=500000 conv=notrunc status=none
        touch keep; fallocate -n -l 100000 keep
        head -c 3000000 /dev/urandom > rnd; truncate -s 10M rnd; ln rnd rnd-link
        setfattr -n user.big -v 0x$(head -c 2000 /dev/urandom | od -An -tx1 | tr -d ' \\n') rnd
        setfattr -n security.selinux -v system_u:object_r:bin_t:s0 rnd
        setfacl -m u:1:r,u:2:w,u:3:x,g:4:r,g:5:w rnd
        setfacl -d -m u:1:r,u:2:w,u:3:x,g:4:r,g:5:w big
        ln -s "$(head -c 2000 /dev/zero | tr '\\0' x)" long-link
        ln -s "$(printf 'a\\nb')" newline-link
      `, 'sh', mnt]);
    } finally {
      await execa('umount', [mnt]);
    }
    const { debugfs } = await expectReadersAgree(img);
    const rnd = debugfs.entries.find((e) => e.path === '/rnd')!;
    expect(rnd.size).toBe(10 * 1024 * 1024);
    expect(rnd.xattrs!['user.big']).toHaveLength(4000);
    expect(debugfs.entries.find((e) => e.path === '/long-link')!.target).toBe('x'.repeat(2000));
    expect(debugfs.entries.filter((e) => e.path.startsWith('/big/'))).toHaveLength(1400);
  });
});

describe('readImageManifest failures', () => {
  it('refuses what is not an ext image, and a missing file', async () => {
    const junk = join(work, 'junk.img');
    await writeFile(junk, Buffer.alloc(8192, 1));
    await expect(readImageManifest(junk)).rejects.toThrow(InputError);
    await expect(readImageManifest(join(work, 'missing.img'))).rejects.toThrow(InputError);
  });

  it('fails loudly on a damaged directory', async () => {
    const bad = join(work, 'bad.img');
    await execa('cp', [image, bad]);
    const [block] = await blocksOf(bad, '/srv');
    await overwriteBlock(bad, block, Buffer.alloc(1024, 0xa5), 1024);
    // Bad input that names the directory, not a tool failure (exit 2, an `unreadable` finding in verify).
    await expect(readImageManifest(bad)).rejects.toThrow(UnreadableImageError);
    await expect(readImageManifest(bad)).rejects.toThrow(/cannot list directory \/srv \(inode \d+\)/);
  });
});

describe('runDebugfs write scripts', () => {
  it('creates odd names, binary xattrs and ACLs as quoteDebugfsArg/encodeDebugfsValue promise', async () => {
    const img = join(work, 'written.img');
    await execa('mke2fs', ['-q', '-t', 'ext4', img, '16M']);
    const host = join(work, 'host-file');
    await writeFile(host, 'content\n');
    const aclFile = join(work, 'acl.bin');
    const acl = await getfattrHex(join(tree, 'srv/big.bin'), 'system.posix_acl_access');
    await writeFile(aclFile, Buffer.from(acl, 'hex'));
    const q = quoteDebugfsArg;
    const dir = '/sp ace "q" back\\slash\tünï';
    const file = `${dir}/f "x"`;
    const binary = Buffer.from([0x2d, 0, 0xff, 0x22, 0x5c, 0x20, 0x0a]); // leading "-", NUL, quote, backslash, space, newline
    const cmds = [
      `mkdir ${q(dir)}`,
      `write ${q(host)} ${q(file)}`,
      `symlink ${q(`${dir}/l`)} ${q('target "with" \\ and spaces')}`,
      `ea_set ${q(file)} user.bin ${encodeDebugfsValue(binary)}`,
      `ea_set ${q(file)} user.empty ${encodeDebugfsValue(Buffer.alloc(0))}`,
      `ea_set -f ${q(aclFile)} ${q(file)} system.posix_acl_access`,
      `sif ${q(file)} mode 0104750`,
      `sif ${q(file)} uid 4000000000`,
      `sif ${q(file)} gid 7`,
      `cd ${q(dir)}`,
      `mknod ${q('c dev')} c 1 3`,
      `sif ${q(`${dir}/c dev`)} mode 020600`,
      'cd /',
      `mkdir ${q(dir)}`, // fails: exists
    ];
    const res = await runDebugfs(img, cmds, { write: true, mergeStderr: true });
    expect(res.sections.map((s) => s.command)).toEqual(cmds);
    expect(res.sections[1].output).toMatch(/^Allocated inode: \d+\n$/);
    expect(res.sections.slice(0, -1).filter((s) => s.output !== '' && !/^Allocated inode: \d+\n$/.test(s.output))).toEqual([]);
    expect(res.sections.at(-1)!.output).toMatch(/exists/i);
    // Without mergeStderr the error is in stderr.
    const again = await runDebugfs(img, [`mkdir ${q(dir)}`], { write: true });
    expect(again.stderr).toMatch(/exists/i);
    expect(again.sections[0].output).toBe('');

    const m = await readImageManifest(img);
    const get = (p: string): ManifestEntry => m.entries.find((e) => e.path === p)!;
    expect(get(dir).type).toBe('dir');
    expect(get(file)).toMatchObject({
      type: 'file', mode: '4750', uid: 4000000000, gid: 7, size: 8,
      sha256: createHash('sha256').update('content\n').digest('hex'),
      xattrs: { 'user.bin': binary.toString('hex'), 'user.empty': '', 'system.posix_acl_access': acl },
    });
    expect(get(`${dir}/l`)).toMatchObject({ type: 'symlink', target: 'target "with" \\ and spaces' });
    expect(get(`${dir}/c dev`)).toMatchObject({ type: 'char', mode: '0600', rdev: '1,3' });
  });

  it('refuses script lines it cannot pass through', async () => {
    await expect(runDebugfs(image, ['stat <2>\nstat <3>'])).rejects.toThrow(/newline/);
    await expect(runDebugfs(join(work, 'missing.img'), ['stat <2>'])).rejects.toThrow(ToolError);
  });
});

describe('two readers agree on a real root', () => {
  it('reads the Debian root image in a few batched debugfs processes, as the loop mount shows it', async () => {
    const tar = await debianRootTar();
    const root = join(work, 'debian');
    await mkdir(root);
    await execa('tar', ['--xattrs', "--xattrs-include=*", '--numeric-owner', '-xpf', tar, '-C', root]);
    const img = join(work, 'debian.img');
    await execa('mke2fs', ['-q', '-t', 'ext4', '-d', root, img, '800M']);

    // Count the debugfs processes through the logged commands.
    const lines: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    const prev = log.verbosity;
    log.setVerbosity('verbose');
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      if (typeof chunk === 'string' && chunk.startsWith('+ ')) {
        lines.push(chunk);
        return true;
      }
      return (write as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stderr.write;
    let result: Awaited<ReturnType<typeof expectReadersAgree>>;
    try {
      result = await expectReadersAgree(img);
    } finally {
      process.stderr.write = write;
      log.setVerbosity(prev);
    }
    const { debugfs, debugfsMs, mountMs } = result;
    const processes = lines.filter((l) => l.includes(' debugfs ')).length;
    expect(debugfs.entries.length).toBeGreaterThan(5000);
    expect(processes).toBeLessThan(40);
    const ping = debugfs.entries.find((e) => e.path === '/usr/bin/ping')!;
    expect(ping.xattrs?.['security.capability']).toBe(await getfattrHex(join(root, 'usr/bin/ping'), 'security.capability'));
    expect(debugfs.entries.some((e) => e.hardlink !== undefined)).toBe(true);
    expect(debugfs.entries.some((e) => e.type === 'char')).toBe(true);
    process.stdout.write(
      `debian root: ${debugfs.entries.length} entries; debugfs reader ${debugfsMs.toFixed(0)} ms in ${processes} debugfs processes; mount reader ${mountMs.toFixed(0)} ms\n`,
    );
  }, 300_000);
});
