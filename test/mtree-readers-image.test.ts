// part-image's own mtree output against the three real readers (go-mtree
// 0.4.4's Check through test/fixtures/go-mtree-check, NetBSD mtree, bsdtar),
// each checking a read-only loop mount of the same image: no difference by
// default, a chmod caught by each, and the keywords only some readers know
// (device, xattr.*) chosen with -K, with what each reader then does.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { isRoot, makeSampleTree } from './helpers/trees.js';
import { skipAllBut } from './helpers/stages.js';
import { debugfsWrite } from './helpers/images.js';
import { BSDTAR_KEYWORDS, bsdtarCompare, bsdtarList, goMtreeCheck, netbsdMtreeCheck } from './helpers/mtree-readers.js';
import { mountReadOnly } from './helpers/mounts.js';

const ODD = 'st*r?[x]#h=q\\b\ttab';
const NO_DEVICE = BSDTAR_KEYWORDS.filter((k) => k !== 'device');

let work: string;
let image: string;
let mnt: string;
let changedMnt: string;
const mounts: string[] = [];

const mountRo = (img: string, name: string) => mountReadOnly(img, join(work, name), mounts);

async function spec(name: string, ...flags: string[]): Promise<string> {
  // Keep the last newline: libarchive ignores a last line without one.
  const r = await runCli(['manifest', image, '--format', 'mtree', ...flags], { stripFinalNewline: false });
  expect(r.exitCode, r.stderr).toBe(0);
  const file = join(work, `${name}.mtree`);
  await writeFile(file, r.stdout);
  return file;
}

async function entryCount(): Promise<number> {
  return (JSON.parse((await runCli(['manifest', image, '--no-hash'])).stdout) as { entries: unknown[] }).entries.length;
}

beforeAll(async () => {
  expect(isRoot, 'the mtree reader tests need root (loop mount, mknod)').toBe(true);
  work = await mkdtemp(join(tmpdir(), 'pi-mtree-image-'));
  const tree = join(work, 'tree');
  await makeSampleTree(tree);
  await writeFile(join(tree, 'srv/odd names', ODD), 'odd\n');
  image = join(work, 'sample.img');
  const r = await runCli(['build', '--input', tree, '--output', image, '--free-mb', '4', ...skipAllBut('fsck', 'readback', 'diff')]);
  expect(r.exitCode, r.stdout + r.stderr).toBe(0);
  mnt = await mountRo(image, 'mnt');
  // The same image with a chmod (setuid dropped) and an xattr removed, through debugfs.
  const changed = join(work, 'changed.img');
  await execa('cp', ['--sparse=always', image, changed]);
  await debugfsWrite(changed, 'sif /usr/bin/tool mode 0100755');
  await debugfsWrite(changed, 'ea_rm /srv/owned user.note');
  changedMnt = await mountRo(changed, 'mnt-changed');
}, 120_000);
afterAll(async () => {
  for (const m of mounts.reverse()) await execa('umount', [m], { reject: false });
  await rm(work, { recursive: true, force: true });
});

describe('the default mtree output, read by go-mtree, NetBSD mtree and bsdtar', () => {
  let file: string;
  beforeAll(async () => {
    file = await spec('default');
  });

  it('is hierarchical with %#o modes and no keyword some reader lacks', async () => {
    const text = (await runCli(['manifest', image, '--format', 'mtree'])).stdout;
    expect(text).toMatch(/^ {12}tool type=file mode=04755 /m);
    expect(text).toMatch(/^ {4}tmp type=dir mode=01777 /m);
    expect(text).not.toMatch(/device=|xattr\.|^\.\//m);
  });

  it('each finds no difference against a loop mount of the image', async () => {
    const go = await goMtreeCheck(file, mnt);
    expect(go.stderr).toBe('');
    expect(go.deltas).toEqual([]);
    expect(go.exitCode).toBe(0);
    const netbsd = await netbsdMtreeCheck(file, mnt);
    expect(netbsd.stdout + netbsd.stderr).toBe('');
    expect(netbsd.exitCode).toBe(0);
    const list = await bsdtarList(file);
    expect(list.stderr).toBe('');
    expect(list.exitCode).toBe(0);
    expect(list.stdout).toMatch(/^-rwsr-xr-x .* usr\/bin\/tool$/m);
    const bsd = await bsdtarCompare(file, mnt, NO_DEVICE);
    expect(bsd.stderr).toBe('');
    expect(bsd.exitCode).toBe(0);
    expect(bsd.onlySpec).toEqual([]);
    expect(bsd.onlyDir).toEqual([]);
    // Every entry of the image came through (lost+found included), the root as ".".
    expect(bsd.stdout.split('\n').filter((l) => /^\.[ /]/.test(l)).length).toBe(await entryCount());
  });

  it('each catches a chmod', async () => {
    const go = await goMtreeCheck(file, changedMnt);
    expect(go.exitCode).toBe(1);
    expect(go.deltas).toEqual([{ type: 'modified', path: 'usr/bin/tool', keys: [{ type: 'modified', name: 'mode', old: '04755', new: '0755' }] }]);
    const netbsd = await netbsdMtreeCheck(file, changedMnt);
    expect(netbsd.exitCode).toBe(2);
    expect(netbsd.stdout).toMatch(/usr\/bin\/tool:\s*\n?\s*permissions \(04755, 0755\)/);
    const bsd = await bsdtarCompare(file, changedMnt, NO_DEVICE);
    expect(bsd.onlySpec).toEqual([expect.stringMatching(/^\.\/usr\/bin\/tool mode=4755 /)]);
    expect(bsd.onlyDir).toEqual([expect.stringMatching(/^\.\/usr\/bin\/tool mode=755 /)]);
  });
});

describe('keywords only some readers know, chosen with -K / -k', () => {
  it('-K device: NetBSD mtree and bsdtar check device numbers; go-mtree 0.4.4 stops on the keyword', async () => {
    const file = await spec('device', '-K', 'device');
    const netbsd = await netbsdMtreeCheck(file, mnt);
    expect(netbsd.stdout + netbsd.stderr).toBe('');
    expect(netbsd.exitCode).toBe(0);
    const bsd = await bsdtarCompare(file, mnt);
    expect(bsd.exitCode, bsd.stderr).toBe(0);
    expect(bsd.onlySpec).toEqual([]);
    expect(bsd.stdout).toContain('./dev/null mode=666 gid=0 uid=0 type=char device=native,1,3');
    const go = await goMtreeCheck(file, mnt);
    expect(go.exitCode).toBe(2);
    expect(go.stderr).toMatch(/Unknown keyword "device"/);
  });

  it('-K xattr: go-mtree checks xattrs and catches a removed one; NetBSD mtree stops; bsdtar lists every entry, warns and exits 1', async () => {
    const file = await spec('xattr', '-K', 'xattr');
    const go = await goMtreeCheck(file, mnt);
    expect(go.stderr).toBe('');
    expect(go.deltas).toEqual([]);
    const goChanged = await goMtreeCheck(file, changedMnt);
    expect(goChanged.exitCode).toBe(1);
    expect(goChanged.deltas.map((d) => [d.path, d.keys?.map((k) => k.name)]).sort()).toEqual([
      ['srv/owned', ['xattr.user.note']], ['usr/bin/tool', ['mode']],
    ]);
    const netbsd = await netbsdMtreeCheck(file, mnt);
    expect(netbsd.exitCode).toBe(1);
    expect(netbsd.stderr).toMatch(/unknown keyword `xattr\./);
    const list = await bsdtarList(file);
    expect(list.exitCode).toBe(1);
    expect(list.stderr).toMatch(/Unrecognized key xattr\.security\.capability=/);
    expect(list.stdout.trim().split('\n')).toHaveLength(await entryCount());
  });

  it('-k replaces the set (type always kept); an unknown keyword is a usage error naming the known ones', async () => {
    const r = await runCli(['manifest', image, '--format', 'mtree', '-k', 'mode']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ {12}tool type=file mode=04755$/m);
    const bad = await runCli(['manifest', image, '--format', 'mtree', '-K', 'devise']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/unknown mtree keyword "devise"/);
    expect(bad.stderr).toMatch(/device/);
  });
});
