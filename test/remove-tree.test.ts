// removeTree(), how every temp dir of a scope is removed: all of it, links
// not followed, and a few unlinks at a time (a tar's staged files can be
// 100,000; fs.rm() started every unlink at once).
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeTree, withScope } from '../src/cleanup.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-remove-tree-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('removeTree', () => {
  it('removes nested folders of many files, and unlinks symlinks without following them', async () => {
    const outside = join(work, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'keep'), 'kept');
    const dir = join(work, 'tree');
    await mkdir(join(dir, 'blobs', 'deeper', 'deepest'), { recursive: true });
    await mkdir(join(dir, 'empty'));
    for (let i = 0; i < 3000; i++) await writeFile(join(dir, 'blobs', String(i)), String(i));
    await writeFile(join(dir, 'blobs', 'deeper', 'deepest', 'f'), 'x');
    await symlink(outside, join(dir, 'link-to-dir'));
    await symlink(join(outside, 'keep'), join(dir, 'blobs', 'link-to-file'));
    await symlink('/nowhere', join(dir, 'dangling'));
    await removeTree(dir);
    expect(existsSync(dir)).toBe(false);
    expect(await readFile(join(outside, 'keep'), 'utf8')).toBe('kept');
  });

  it('takes a path that is not there, or a file', async () => {
    await expect(removeTree(join(work, 'never-made'))).resolves.toBeUndefined();
    const file = join(work, 'a-file');
    await writeFile(file, 'x');
    await removeTree(file);
    expect(existsSync(file)).toBe(false);
  });

  it('is what a scope removes its temp dirs with', async () => {
    let made = '';
    await withScope(async (scope) => {
      made = await scope.tempDir('pi-remove-tree-', work);
      await mkdir(join(made, 'sub'));
      for (let i = 0; i < 100; i++) await writeFile(join(made, 'sub', String(i)), 'x');
    });
    expect(made).not.toBe('');
    expect(existsSync(made)).toBe(false);
  });
});
