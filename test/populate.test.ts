// The debugfs script the builder writes: argv-level tests, no image needed.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPopulateScript } from '../src/build/populate.js';
import { makeManifest } from '../src/manifest/entry.js';
import type { ManifestEntry } from '../src/types.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-populate-'));
});
afterAll(() => rm(work, { recursive: true, force: true }));

const entries: ManifestEntry[] = [
  { path: '/', type: 'dir', mode: '0755', uid: 0, gid: 0 },
  { path: '/usr', type: 'dir', mode: '0755', uid: 0, gid: 0, mtime: 1700000000 },
  { path: '/usr/bin', type: 'dir', mode: '0755', uid: 0, gid: 0 },
  { path: '/usr/bin/ping', type: 'file', mode: '0755', uid: 0, gid: 0, size: 3, xattrs: { 'security.capability': '0100000200200000000000000000000000000000' } },
  { path: '/usr/bin/su', type: 'file', mode: '4755', uid: 0, gid: 0, size: 3, nlink: 2 },
  { path: '/usr/bin/su2', type: 'file', mode: '4755', uid: 0, gid: 0, size: 3, nlink: 2, hardlink: '/usr/bin/su' },
  { path: '/dev', type: 'dir', mode: '0755', uid: 0, gid: 0 },
  { path: '/dev/null', type: 'char', mode: '0666', uid: 0, gid: 0, rdev: '1,3' },
  { path: '/dev/-odd "name"', type: 'fifo', mode: '0600', uid: 1000, gid: 1000 },
  { path: '/home', type: 'symlink', mode: '0777', uid: 0, gid: 0, target: 'var/home dir', size: 12 },
  { path: '/tmp', type: 'dir', mode: '1777', uid: 0, gid: 0, mtime: 1800000000 },
];
const content = new Map([['/usr/bin/ping', '/blobs/0'], ['/usr/bin/su', '/blobs/1']]);

describe('populate script', () => {
  it('creates every entry in path order, relative to its folder, and sets every field', async () => {
    const cmds = await buildPopulateScript(makeManifest(structuredClone(entries)), content, { now: 1700000000, clampMtime: 1750000000, workDir: work });
    expect(cmds[0]).toBe('set_current_time 20231114221320');
    expect(cmds).toEqual(expect.arrayContaining([
      'sif / mode 040755',
      'mkdir dev',
      'cd /dev',
      'mknod "/dev/-odd ""name""" p',
    ]));
    const text = cmds.join('\n');
    expect(text).toContain('mknod null c 1 3\nsif null mode 020666');
    expect(text).toContain('sif "/dev/-odd ""name""" uid 1000');
    expect(text).toContain('cd /usr/bin\nwrite /blobs/0 ping\nsif ping mode 0100755');
    expect(text).toMatch(/ea_set -r -f \S+xattr-0 \/usr\/bin\/ping security\.capability/);
    expect(text).toContain('write /blobs/1 su\nsif su mode 0104755');
    expect(text).toContain('ln /usr/bin/su su2');
    expect(text).not.toContain('sif su2');
    expect(text).toContain('symlink home "var/home dir"');
    // mtimes: the ones equal to "now" are already right; later ones are clamped.
    expect(text).not.toContain('sif usr mtime');
    expect(text).toContain('sif tmp mtime @1750000000');
    expect(cmds.at(-1)).toBe('sif /usr/bin/su links_count 2');
    const value = await readFile(join(work, 'xattr-0'));
    expect(value.toString('hex')).toBe('0100000200200000000000000000000000000000');
  });

  it('refuses a name that no debugfs quoting can carry', async () => {
    const bad = makeManifest([{ path: '/', type: 'dir', mode: '0755', uid: 0, gid: 0 }, { path: '/a\nb', type: 'dir', mode: '0755', uid: 0, gid: 0 }]);
    await expect(buildPopulateScript(bad, new Map(), { now: 0, workDir: work })).rejects.toThrow(/newline/);
  });
});
