// The mtree readers' harness (test/helpers/mtree-readers.ts) works: go-mtree's
// checker, NetBSD mtree and bsdtar each read a spec written by go-mtree itself,
// find no difference against the folder it describes, and each catches a chmod.
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bsdtarCompare, bsdtarList, goMtreeCheck, goMtreeCreate, netbsdMtreeCheck } from './helpers/mtree-readers.js';

let work: string;
let tree: string;
let spec: string;
const KEYWORDS = ['size', 'type', 'uid', 'gid', 'mode', 'link', 'nlink', 'sha256digest'];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-mtree-readers-'));
  tree = join(work, 'tree');
  await mkdir(join(tree, 'usr/bin'), { recursive: true });
  await mkdir(join(tree, 'etc'), { recursive: true });
  await writeFile(join(tree, 'etc/os-release'), 'ID=readers\n');
  await writeFile(join(tree, 'usr/bin/tool'), 'setuid tool\n');
  await chmod(join(tree, 'usr/bin/tool'), 0o4755);
  await symlink('../usr/bin/tool', join(tree, 'etc/tool-link'));
  spec = join(work, 'tree.mtree');
  await writeFile(spec, await goMtreeCreate(tree, KEYWORDS));
}, 120_000);
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('the three mtree readers, on a spec go-mtree wrote', () => {
  it('go-mtree writes modes as %#o (04755), the form the BSD readers compare', async () => {
    const text = await readFile(spec, 'utf8');
    expect(text).toMatch(/^ {4}tool .*mode=04755/m);
    expect(text).toMatch(/sha256digest=[0-9a-f]{64}/);
  });

  it('all three find no difference against the folder it describes', async () => {
    const go = await goMtreeCheck(spec, tree);
    expect(go.stderr).toBe('');
    expect(go.deltas).toEqual([]);
    expect(go.exitCode).toBe(0);
    const netbsd = await netbsdMtreeCheck(spec, tree);
    expect(netbsd.stdout + netbsd.stderr).toBe('');
    expect(netbsd.exitCode).toBe(0);
    const list = await bsdtarList(spec);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^-rwsr-xr-x .* usr\/bin\/tool$/m);
    const bsd = await bsdtarCompare(spec, tree);
    expect(bsd.exitCode, bsd.stderr).toBe(0);
    expect(bsd.onlySpec).toEqual([]);
    expect(bsd.onlyDir).toEqual([]);
    expect(bsd.stdout).toContain('./usr/bin/tool mode=4755');
  });

  it('each catches a chmod', async () => {
    await chmod(join(tree, 'usr/bin/tool'), 0o755);
    try {
      const go = await goMtreeCheck(spec, tree);
      expect(go.exitCode).toBe(1);
      expect(go.deltas).toEqual([{ type: 'modified', path: 'usr/bin/tool', keys: [{ type: 'modified', name: 'mode', old: '04755', new: '0755' }] }]);
      const netbsd = await netbsdMtreeCheck(spec, tree);
      expect(netbsd.exitCode).toBe(2);
      expect(netbsd.stdout).toMatch(/usr\/bin\/tool:\s*\n\s*permissions \(04755, 0755\)/);
      const bsd = await bsdtarCompare(spec, tree);
      expect(bsd.onlySpec).toEqual([expect.stringMatching(/^\.\/usr\/bin\/tool mode=4755 /)]);
      expect(bsd.onlyDir).toEqual([expect.stringMatching(/^\.\/usr\/bin\/tool mode=755 /)]);
    } finally {
      await chmod(join(tree, 'usr/bin/tool'), 0o4755);
    }
  });

  it('go-mtree catches changed content by its sha256digest', async () => {
    await writeFile(join(tree, 'etc/os-release'), 'ID=Readers\n');
    const go = await goMtreeCheck(spec, tree);
    expect(go.exitCode).toBe(1);
    expect(go.deltas.map((d) => [d.path, d.keys?.map((k) => k.name)])).toEqual([['etc/os-release', ['sha256digest']]]);
  });

  it('the checker stops with exit 2 and go-mtree\'s own message on a keyword go-mtree does not know', async () => {
    const odd = join(work, 'device.mtree');
    await writeFile(odd, '#mtree\n. type=dir mode=0755\n./null type=char mode=0666 device=1,3\n');
    const go = await goMtreeCheck(odd, tree);
    expect(go.exitCode).toBe(2);
    expect(go.stderr).toMatch(/^go-mtree-check: check .*: .*device/m);
  });
});
