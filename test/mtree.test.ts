// mtree export: the encoding (pure), and proof against the real consumers:
// libarchive (bsdtar) reads the specification and archives a mounted image
// through it, NetBSD mtree validates a loop-mounted image against it and
// catches a change.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { isRoot, makeSampleTree } from './helpers/trees.js';
import { skipAllBut } from './helpers/stages.js';
import { debugfsWrite } from './helpers/images.js';
import { mtreeKeywords, mtreeLine, toMtree } from '../src/manifest/mtree.js';
import { visDecode, visEncode } from '../src/manifest/vis.js';
import { makeManifest } from '../src/manifest/entry.js';
import type { ManifestEntry } from '../src/types.js';
import { mountReadOnly } from './helpers/mounts.js';

const ODD = 'st*r?[x]#h=q\\b\ttab';

let work: string;
let tree: string;
let image: string;
const mounts: string[] = [];

const mountRo = (img: string, name: string) => mountReadOnly(img, join(work, name), mounts);

beforeAll(async () => {
  // Loop mounts and device nodes need root; without it these tests must fail, not skip.
  expect(isRoot, 'the mtree consumer tests need root (loop mount, mknod)').toBe(true);
  work = await mkdtemp(join(tmpdir(), 'pi-mtree-test-'));
  tree = join(work, 'tree');
  await makeSampleTree(tree);
  await writeFile(join(tree, 'srv/odd names', ODD), 'odd\n');
  image = join(work, 'sample.img');
  const r = await runCli(['build', '--input', tree, '--output', image, '--free-mb', '4', ...skipAllBut('fsck', 'readback', 'diff')]);
  expect(r.exitCode, r.stdout + r.stderr).toBe(0);
});
afterAll(async () => {
  for (const m of mounts.reverse()) await execa('umount', [m], { reject: false });
  await rm(work, { recursive: true, force: true });
});

describe('mtree encoding', () => {
  it('vis-encodes in octal what mtree readers would take for whitespace, comments, globs or keywords', () => {
    expect(visEncode('/srv/odd names/a')).toBe('/srv/odd\\040names/a');
    expect(visEncode('*?[#=\\')).toBe('\\052\\077\\133\\043\\075\\134');
    expect(visEncode('tab\there\nnl')).toBe('tab\\011here\\012nl');
    expect(visEncode('ünï')).toBe('\\303\\274n\\303\\257');
    expect(visEncode('plain-name_1.2+x,y@z%:]{}')).toBe('plain-name_1.2+x,y@z%:]{}');
    for (const s of [ODD, 'ünï/naïve.txt', 'a b\\c', '\x01\x7f']) expect(visDecode(visEncode(s)).toString('utf8')).toBe(s);
    expect(visDecode('a\\sb\\#c').toString()).toBe('a b#c');
  });

  it('writes the hierarchy with type, mode (%#o), owner, size, digest, link and nlink; device and go-mtree xattrs on request', () => {
    const entries: ManifestEntry[] = [
      { path: '/', type: 'dir', mode: '0755', uid: 0, gid: 0, mtime: 5 },
      { path: '/dev', type: 'dir', mode: '0755', uid: 0, gid: 0 },
      { path: '/run', type: 'dir', mode: '1777', uid: 0, gid: 0 },
      { path: '/usr', type: 'dir', mode: '0755', uid: 0, gid: 0 },
      { path: '/usr/bin', type: 'dir', mode: '0755', uid: 0, gid: 0 },
      { path: '/usr/bin/ping', type: 'file', mode: '4755', uid: 0, gid: 0, size: 3, sha256: 'ab'.repeat(32), nlink: 2,
        xattrs: { 'user.z': '68656c6c6f', 'security.capability': '0100000200200000000000000000000000000000' } },
      { path: '/usr/bin/sh', type: 'symlink', mode: '0777', uid: 0, gid: 0, size: 7, target: 'bin/a b' },
      { path: '/dev/null', type: 'char', mode: '0666', uid: 0, gid: 0, rdev: '1,3' },
      { path: '/dev/sda', type: 'block', mode: '0660', uid: 0, gid: 6, rdev: '8,0' },
      { path: '/run/fifo', type: 'fifo', mode: '0600', uid: 1000, gid: 1000 },
      { path: '/run/sock', type: 'socket', mode: '0755', uid: 0, gid: 0 },
      { path: '/usr-file', type: 'file', mode: '0000', uid: 0, gid: 0, size: 0 },
    ];
    const m = makeManifest(entries);
    expect(toMtree(m)).toBe([
      '#mtree',
      '. type=dir mode=0755 uid=0 gid=0',
      '    usr-file type=file mode=0 uid=0 gid=0 size=0',
      '    dev type=dir mode=0755 uid=0 gid=0',
      '        null type=char mode=0666 uid=0 gid=0',
      '        sda type=block mode=0660 uid=0 gid=6',
      '    ..',
      '    run type=dir mode=01777 uid=0 gid=0',
      '        fifo type=fifo mode=0600 uid=1000 gid=1000',
      '    ..',
      '    usr type=dir mode=0755 uid=0 gid=0',
      '        bin type=dir mode=0755 uid=0 gid=0',
      `            ping type=file mode=04755 uid=0 gid=0 size=3 sha256digest=${'ab'.repeat(32)} nlink=2`,
      '            sh type=link mode=0777 uid=0 gid=0 link=bin/a\\040b',
      '        ..',
      '    ..',
      '',
    ].join('\n'));
    const all = toMtree(m, { keywords: mtreeKeywords({ add: ['device', 'xattr'] }) });
    expect(all).toContain('        null type=char mode=0666 uid=0 gid=0 device=native,1,3\n');
    expect(all).toContain(`nlink=2 xattr.security.capability=AQAAAgAgAAAAAAAAAAAAAAAAAAA= xattr.user.z=aGVsbG8=\n`);
    const ping = m.entries.find((e) => e.path === '/usr/bin/ping')!;
    expect(mtreeLine(ping, { hash: false })).toBe('./usr/bin/ping type=file mode=04755 uid=0 gid=0 size=3 nlink=2');
    expect(mtreeKeywords({ only: ['mode'] })).toEqual(['type', 'mode']);
    expect(() => mtreeKeywords({ add: ['xattrs'] })).toThrow(/unknown mtree keyword "xattrs"/);
    expect(() => toMtree(makeManifest([entries[0], entries[5]]))).toThrow(/\/usr\/bin is missing/);
  });
});

describe('part-image manifest --format mtree against real consumers', () => {
  let spec: string;
  let specWithXattrs: string;

  beforeAll(async () => {
    // Keep the last newline: libarchive ignores a last line without one.
    const r = await runCli(['manifest', image, '--format', 'mtree'], { stripFinalNewline: false });
    expect(r.exitCode, r.stderr).toBe(0);
    spec = join(work, 'sample.mtree');
    await writeFile(spec, r.stdout);
    const x = await runCli(['manifest', image, '--format', 'mtree', '-K', 'xattr'], { stripFinalNewline: false });
    expect(x.exitCode, x.stderr).toBe(0);
    specWithXattrs = join(work, 'sample-xattrs.mtree');
    await writeFile(specWithXattrs, x.stdout);
  });

  it('bsdtar (libarchive) reads every entry, odd names decoded', async () => {
    const r = await execa('bsdtar', ['-tf', spec]);
    const names = r.stdout.split('\n');
    const json = JSON.parse((await runCli(['manifest', image])).stdout) as { entries: ManifestEntry[] };
    expect(names).toHaveLength(json.entries.length);
    // bsdtar shows a backslash as \\ and a tab as \t when it lists; the round trip below checks the bytes.
    // The hierarchical form lists relative names ("srv/x"), as bsdtar lists a spec go-mtree or NetBSD mtree wrote.
    expect(names).toContain('srv/odd names/st*r?[x]#h=q\\\\b\\ttab');
    expect(names).toContain('srv/odd names/ünïcödé/naïve.txt');
    const v = await execa('bsdtar', ['-tvf', spec]);
    expect(v.stdout).toMatch(/^-rwsr-xr-x .* usr\/bin\/tool$/m);
    expect(v.stdout).toMatch(/^lrwxrwxrwx .* srv\/short-link -> \.\.\/usr\/bin\/tool$/m);
    const dev = await runCli(['manifest', image, '--format', 'mtree', '-K', 'device'], { stripFinalNewline: false });
    const devSpec = join(work, 'sample-device.mtree');
    await writeFile(devSpec, dev.stdout);
    expect((await execa('bsdtar', ['-tvf', devSpec])).stdout).toMatch(/^crw-rw-rw- .* 1,3 .* dev\/null$/m);
  });

  it('bsdtar -cf OUT.tar @SPEC on the mounted image gives back the image, all but the xattrs mtree cannot carry', async () => {
    const mnt = await mountRo(image, 'mnt-bsdtar');
    const out = join(work, 'from-spec.tar');
    await execa('bsdtar', ['-cf', out, `@${spec}`], { cwd: mnt });
    const d = await runCli(['diff', image, out, '--format', 'json']);
    expect(d.exitCode).toBe(1);
    const diff = JSON.parse(d.stdout);
    expect(new Set(diff.differences.map((x: { code: string }) => x.code))).toEqual(new Set(['xattr']));
    expect(diff.summary.onlyA + diff.summary.onlyB).toBe(0);
  });

  it('NetBSD mtree validates the loop-mounted image against the specification, and catches a change', async () => {
    const mnt = await mountRo(image, 'mnt-mtree');
    const ok = await execa('mtree', ['-f', spec, '-p', mnt], { reject: false });
    expect(ok.stdout + ok.stderr).toBe('');
    expect(ok.exitCode).toBe(0);

    const changed = join(work, 'changed.img');
    await execa('cp', ['--sparse=always', image, changed]);
    await debugfsWrite(changed, 'sif /usr/bin/tool mode 0100755');
    await debugfsWrite(changed, 'sif /srv/owned uid 0');
    const mnt2 = await mountRo(changed, 'mnt-changed');
    const bad = await execa('mtree', ['-f', spec, '-p', mnt2], { reject: false });
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stdout).toMatch(/usr\/bin\/tool:\s+permissions \(0?4755, 0?755\)/);
    expect(bad.stdout).toMatch(/srv\/owned:\s+user \(1000, 0\)/);
  });

  it('writes go-mtree xattr keywords with -K xattr, which NetBSD mtree refuses: hence not by default', async () => {
    const text = await readFile(specWithXattrs, 'utf8');
    expect(text).toMatch(/^ +pinglike .* xattr\.security\.capability=AQAAAgAgAAAAAAAAAAAAAAAAAAA=$/m);
    expect(text).toMatch(/^ +owned .* xattr\.user\.bin=AP8Q xattr\.user\.note=aGVsbG8=$/m);
    expect(await readFile(spec, 'utf8')).not.toContain('xattr.');
    const r = await execa('mtree', ['-f', specWithXattrs, '-p', tree], { reject: false });
    expect(r.stderr).toMatch(/unknown keyword `xattr\./);
  });

  it('works on a directory and a tar too; --no-hash drops the digests; --json is the default format', async () => {
    const fromDir = await runCli(['manifest', tree, '--format', 'mtree', '--no-hash', '--no-xattrs'], { stripFinalNewline: false });
    expect((await runCli(['manifest', tree, '--format', 'mtree', '--no-hash'], { stripFinalNewline: false })).stdout).toBe(fromDir.stdout);
    expect(fromDir.exitCode).toBe(0);
    expect(fromDir.stdout).not.toContain('sha256digest');
    expect(fromDir.stdout).toContain('\n        big.bin type=file mode=0644 uid=0 gid=0 size=300000\n');
    // The directory tree passes NetBSD mtree as it stands (no lost+found in it).
    const dirSpec = join(work, 'dir.mtree');
    await writeFile(dirSpec, fromDir.stdout);
    const check = await execa('mtree', ['-f', dirSpec, '-p', tree], { reject: false });
    expect(check.stdout + check.stderr).toBe('');

    const tar = join(work, 'tree.tar');
    await execa('tar', ['--xattrs', '--xattrs-include=*', '--acls', '--numeric-owner', '-cf', tar, '-C', tree, '.']);
    const fromTar = await runCli(['manifest', tar, '--format', 'mtree', '-K', 'xattr'], { stripFinalNewline: false });
    const fromImage = await readFile(specWithXattrs, 'utf8');
    expect(fromTar.stdout).toBe(fromImage.replace(/^ {4}lost\+found .*\n {4}\.\.\n/m, ''));

    const json = await runCli(['manifest', tree, '--json']);
    const dflt = await runCli(['manifest', tree]);
    expect(json.stdout).toBe(dflt.stdout);
    expect(json.stdout.startsWith('{"format":"part-image-manifest/1","entries":[\n')).toBe(true);
    const bad = await runCli(['manifest', tree, '--format', 'yaml']);
    expect(bad.exitCode).toBe(2);
  });
});
