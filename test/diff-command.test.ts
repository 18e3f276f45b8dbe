// `part-image diff A B` on every kind of source: images, directories, tars,
// Raptor layer stacks and manifest files; text and JSON output; exit codes.
import { chmod, mkdtemp, mkdir, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { makeSampleTree } from './helpers/trees.js';
import { skipAllBut } from './helpers/stages.js';
import { diffSummary, formatDiffText } from '../src/manifest/diff-format.js';
import type { Delta } from '../src/manifest/diff.js';

let work: string;
let tree: string;
let image: string;
let tar: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-diff-cmd-'));
  tree = join(work, 'tree');
  await makeSampleTree(tree);
  image = join(work, 'tree.img');
  const r = await runCli(['build', '--input', tree, '--output', image, '--free-mb', '4', ...skipAllBut('fsck', 'readback', 'diff')]);
  expect(r.exitCode, r.stdout + r.stderr).toBe(0);
  tar = join(work, 'tree.tar');
  await execa('tar', ['--xattrs', '--xattrs-include=*', '--acls', '--numeric-owner', '-cf', tar, '-C', tree, '.']);
});
afterAll(() => rm(work, { recursive: true, force: true }));

describe('diff text format', () => {
  const deltas: Delta[] = [
    { code: 'missing', path: '/etc/gone', expected: 'file' },
    { code: 'extra', path: '/etc/new', actual: 'dir' },
    { code: 'mode', path: '/usr/bin/ping', field: 'mode', expected: '4755', actual: '0755' },
    { code: 'xattr', path: '/usr/bin/ping', field: 'security.capability', expected: '0100000200200000000000000000000000000000', actual: undefined },
    { code: 'xattr', path: '/usr/bin/ping', field: 'user.note', expected: '68656c6c6f', actual: '776f726c64' },
    { code: 'content', path: '/usr/bin/ping', field: 'sha256', expected: 'ab'.repeat(32), actual: 'cd'.repeat(32) },
  ];

  it('groups by path: - only in A, + only in B, ~ changed with one line per field, then a summary', () => {
    expect(formatDiffText(deltas)).toBe([
      '- /etc/gone  file, only in A',
      '+ /etc/new   dir, only in B',
      '~ /usr/bin/ping',
      '      mode                       4755 -> 0755',
      '      xattr security.capability  01000002002000000000000000000000… (20 bytes) -> (none)',
      '      xattr user.note            "hello" -> "world"',
      '      content sha256             abababababababab… -> cdcdcdcdcdcdcdcd…',
      '',
      '3 paths differ: 1 only in A, 1 only in B, 1 changed (mode 1, xattr 2, content 1)',
      '',
    ].join('\n'));
    expect(diffSummary(deltas.slice(2, 3), { a: 'golden', b: 'image' })).toBe('1 path differs: 1 changed (mode 1)');
  });
});

describe('part-image diff', () => {
  it('finds a directory, its tar, its image and its manifest the same (exit 0); /lost+found is not a difference', async () => {
    const manifest = join(work, 'tree.manifest.json');
    const m = await runCli(['manifest', image], { stripFinalNewline: false });
    await writeFile(manifest, m.stdout);
    for (const [a, b] of [[tree, image], [tar, image], [tree, tar], [manifest, tree], [image, manifest]]) {
      const r = await runCli(['diff', a, b]);
      expect(r.exitCode, `${a} vs ${b}: ${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(/^same: \d+ entries in A \((dir|tar|image|manifest)\), \d+ in B \((dir|tar|image|manifest)\)$/);
    }
  });

  it('reads an image the same way rootless (debugfs) and through a loop mount (--mounted, root): byte-identical manifests', async () => {
    const viaDebugfs = await runCli(['manifest', image]);
    const viaMount = await runCli(['manifest', image, '--mounted']);
    expect(viaMount.exitCode, viaMount.stderr).toBe(0);
    expect(viaMount.stdout).toContain('"path":"/usr/bin/pinglike"');
    expect(viaMount.stdout).toBe(viaDebugfs.stdout);
    const onTree = await runCli(['manifest', tree, '--mounted']);
    expect(onTree.exitCode).toBe(2);
    expect(onTree.stderr).toMatch(/--mounted reads images only/);
  });

  it('reports what changed between a tree and an image, readable and exit 1', async () => {
    const changed = join(work, 'changed');
    await execa('cp', ['-a', tree, changed]);
    await chmod(join(changed, 'usr/bin/tool'), 0o755);
    await unlink(join(changed, 'etc/empty'));
    await mkdir(join(changed, 'opt'));
    await writeFile(join(changed, 'etc/os-release'), 'ID=changed\n');
    await execa('setfattr', ['-x', 'user.note', join(changed, 'srv/owned')]);
    await unlink(join(changed, 'srv/short-link'));
    await symlink('../usr/bin/pinglike', join(changed, 'srv/short-link'));
    const r = await runCli(['diff', image, changed]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain(`--- A: ${image} (image, `);
    expect(r.stdout).toContain(`+++ B: ${changed} (dir, `);
    const body = r.stdout.split('\n\n')[1];
    expect(body.split('\n')).toEqual([
      '- /etc/empty  file, only in A',
      '~ /etc/os-release',
      '      content size  24 -> 11',
      '+ /opt        dir, only in B',
      '~ /srv/owned',
      '      xattr user.note  "hello" -> (none)',
      '~ /srv/short-link',
      '      target  ../usr/bin/tool -> ../usr/bin/pinglike',
      '~ /usr/bin/tool',
      '      mode  4755 -> 0755',
    ]);
    expect(r.stdout.trimEnd().split('\n').at(-1)).toBe('6 paths differ: 1 only in A, 1 only in B, 4 changed (content 1, xattr 1, link 1, mode 1)');

    const j = await runCli(['diff', image, changed, '--format', 'json']);
    expect(j.exitCode).toBe(1);
    const json = JSON.parse(j.stdout);
    expect(json.same).toBe(false);
    expect(json.a).toMatchObject({ name: image, kind: 'image' });
    expect(json.b).toMatchObject({ name: changed, kind: 'dir' });
    expect(json.summary).toEqual({ paths: 6, onlyA: 1, onlyB: 1, changed: 4, byCode: { missing: 1, content: 1, extra: 1, xattr: 1, link: 1, mode: 1 } });
    expect(json.differences).toContainEqual({ code: 'mode', path: '/usr/bin/tool', field: 'mode', expected: '4755', actual: '0755' });
    expect(json.differences).toContainEqual({ code: 'xattr', path: '/srv/owned', field: 'user.note', expected: '68656c6c6f' });
    const alias = await runCli(['diff', image, changed, '--json']);
    expect(alias.stdout).toBe(j.stdout);

    // --no-hash still sees sizes; --compare-mtime adds mtimes.
    const nohash = await runCli(['diff', image, changed, '--no-hash', '--json']);
    expect(JSON.parse(nohash.stdout).summary.byCode.size).toBe(1);
    const mt = await runCli(['diff', tree, changed, '--compare-mtime', '--json']);
    expect(JSON.parse(mt.stdout).summary.byCode.mtime).toBeGreaterThan(0);
  });

  it('reads a Raptor layer stack, merged, as one side', async () => {
    const stack = join(work, 'stack');
    await mkdir(join(stack, 'base/etc'), { recursive: true });
    await mkdir(join(stack, 'top/etc'), { recursive: true });
    await writeFile(join(stack, 'base/etc/os-release'), 'base\n');
    await writeFile(join(stack, 'base/etc/only-base'), 'b\n');
    await writeFile(join(stack, 'top/etc/os-release'), 'top!\n');
    await writeFile(join(stack, 'raptor.json'), JSON.stringify({ targets: ['t'], layers: { t: ['base', 'top'] } }));
    const flat = join(work, 'flat');
    await mkdir(join(flat, 'etc'), { recursive: true });
    await writeFile(join(flat, 'etc/os-release'), 'top!\n');
    await writeFile(join(flat, 'etc/only-base'), 'b\n');
    const r = await runCli(['diff', stack, flat]);
    expect(r.stdout + r.stderr).toMatch(/^same: 4 entries in A \(layers\), 4 in B \(dir\)/);
    expect(r.exitCode).toBe(0);
    await writeFile(join(flat, 'etc/os-release'), 'base\n');
    const d = await runCli(['diff', stack, flat]);
    expect(d.exitCode).toBe(1);
    expect(d.stdout).toContain('~ /etc/os-release\n      content sha256');
  });

  it('exits 2 for a side it cannot read, and for a bad format', async () => {
    const missing = await runCli(['diff', image, join(work, 'nope')]);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toMatch(/input not found/);
    const fmt = await runCli(['diff', image, tree, '--format', 'xml']);
    expect(fmt.exitCode).toBe(2);
    const one = await runCli(['diff', image]);
    expect(one.exitCode).toBe(2);
  });
});
