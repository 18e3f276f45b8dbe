// The builder names every inode it sets a field of as <N>, computed by
// build/inodes.ts the way libext2fs allocates. Judged here by the real
// thing: images whose trees fill several inode groups (lost+found kept,
// replaced by a file, or absent), read back through the kernel (inode
// numbers, modes, owners, mtimes) and through part-image's own reader. In a
// fresh filesystem the groups fill in order, so where the search starts
// (the parent's group) shows only in the pure tests above; a wrong number
// for a file or device fails the build itself (checkAllocations).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InodeAllocator } from '../src/build/inodes.js';
import { checkAllocations } from '../src/build/populate.js';
import { buildRawImage } from '../src/build/index.js';
import { withScope } from '../src/cleanup.js';
import { makeManifest, parentPath } from '../src/manifest/entry.js';
import { readExt4Superblock } from '../src/image/superblock.js';
import { readImageManifest } from '../src/image/debugfs-reader.js';
import { diffManifests } from '../src/manifest/diff.js';
import type { InputTree, ManifestEntry } from '../src/types.js';
import { isRoot } from './helpers/trees.js';
import { loopLeftovers } from './helpers/mounts.js';

describe('InodeAllocator (ext2fs_new_inode of libext2fs 1.47.0)', () => {
  it('hands out the first free inode after the reserved ones and lost+found, from the parent folder\'s group on', () => {
    const a = new InodeAllocator({ inodeCount: 64, inodesPerGroup: 16, firstIno: 11 });
    expect([a.alloc(2), a.alloc(2), a.alloc(2)]).toEqual([12, 13, 14]);
    // A folder in group 1 (inodes 17-32): its children start at 17.
    expect(a.alloc(20)).toBe(17);
    expect(a.alloc(20)).toBe(18);
    // Back in group 0, the first free one there.
    expect(a.alloc(2)).toBe(15);
    // Group 3 (49-64) from a folder in it.
    expect(a.alloc(50)).toBe(49);
  });

  it('searches one inode past the end of a group, as the library does, then the next groups, then wraps to firstIno', () => {
    const a = new InodeAllocator({ inodeCount: 32, inodesPerGroup: 16, firstIno: 11 });
    const got: (number | undefined)[] = [];
    for (let i = 0; i < 21; i++) got.push(a.alloc(20)); // group 1 start: 17..32, then wrap to 11 (used)..16
    expect(got.slice(0, 16)).toEqual(Array.from({ length: 16 }, (_, i) => 17 + i));
    expect(got.slice(16)).toEqual([12, 13, 14, 15, 16]);
    expect(a.alloc(2)).toBeUndefined();
    expect(a.alloc(20)).toBeUndefined();
  });

  it('gives lost+found\'s inode again once it is removed', () => {
    const a = new InodeAllocator({ inodeCount: 64, inodesPerGroup: 32, firstIno: 11 });
    expect(a.alloc(2)).toBe(12);
    a.free(11);
    expect(a.alloc(2)).toBe(11);
    expect(a.alloc(2)).toBe(13);
  });

  it('refuses a geometry that is not a filesystem\'s', () => {
    expect(() => new InodeAllocator({ inodeCount: 64, inodesPerGroup: 0, firstIno: 11 })).toThrow(/bad inode geometry/);
    expect(() => new InodeAllocator({ inodeCount: 5, inodesPerGroup: 8, firstIno: 11 })).toThrow(/bad inode geometry/);
  });

  it('checkAllocations fails on the first inode debugfs allocated otherwise, and on a count that differs', () => {
    expect(() => checkAllocations([12, 13], [12, 13])).not.toThrow();
    expect(() => checkAllocations([12, 13], [12, 14])).toThrow(/allocated inode 14 for write or mknod number 2, where part-image computed 13/);
    expect(() => checkAllocations([12, 13], [12])).toThrow(/allocated inode none .* computed 13 \(1 allocated, 2 computed\)/);
  });
});

describe('inode numbers in real images', () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'pi-inodes-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  /**
   * A tree of `n` entries that fills several groups: folders of 49 entries
   * each, of every type, and a late subfolder with children. The
   * files share one empty host file as content, so the build is quick.
   * Every entry has its own mode, owner and mtime, so a field set on the
   * wrong inode shows.
   */
  async function manyGroupsTree(n: number, withLostFound: 'dir' | 'file' | 'none'): Promise<InputTree> {
    const empty = join(work, 'empty');
    await writeFile(empty, '');
    const entries: ManifestEntry[] = [{ path: '/', type: 'dir', mode: '0755', uid: 0, gid: 0, mtime: 1_600_000_000 }];
    const content = new Map<string, string>();
    let k = 0;
    const fields = () => {
      k++;
      return { uid: k % 7, gid: k % 5, mtime: 1_600_000_000 + k };
    };
    if (withLostFound === 'dir') entries.push({ path: '/lost+found', type: 'dir', mode: '0700', uid: 0, gid: 0, mtime: 1_600_000_001 });
    for (let d = 0; entries.length < n; d++) {
      const dir = `/d${String(d).padStart(4, '0')}`;
      entries.push({ path: dir, type: 'dir', mode: ['0755', '0750', '0700', '0775'][d % 4], ...fields() });
      for (let f = 0; f < 48; f++) {
        const path = `${dir}/e${String(f).padStart(2, '0')}`;
        switch (f % 6) {
          case 0: entries.push({ path, type: 'symlink', mode: '0777', target: `t${f}`, size: `t${f}`.length, ...fields() }); break;
          case 1: entries.push({ path, type: 'fifo', mode: '0640', ...fields() }); break;
          case 2: entries.push({ path, type: 'char', mode: '0620', rdev: `${f},${d % 256}`, ...fields() }); break;
          case 3: entries.push({ path, type: 'dir', mode: '0711', ...fields() }); break;
          default:
            entries.push({ path, type: 'file', mode: ['0644', '0600', '4755', '0444'][(d + f) % 4], size: 0, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', ...fields() });
            content.set(path, empty);
        }
      }
    }
    if (withLostFound === 'file') {
      entries.push({ path: '/lost+found', type: 'file', mode: '0600', uid: 0, gid: 0, size: 0, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', mtime: 1_600_000_002 });
      content.set('/lost+found', empty);
    }
    // The last folders' subfolders are made when the first groups are full:
    // give one of them children, so that they start from its group.
    const late = entries.filter((e) => e.type === 'dir' && e.path.split('/').length === 3).at(-1)!.path;
    for (let f = 0; f < 20; f++) {
      entries.push({ path: `${late}/c${f}`, type: 'file', mode: '0640', size: 0, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', ...fields() });
      content.set(`${late}/c${f}`, empty);
    }
    const manifest = makeManifest(entries);
    return { kind: 'manifest', source: 'test', manifest, content, usedMb: 1 };
  }

  /** What the allocator says each path gets, in the order the builder creates them. */
  function predicted(t: InputTree, geometry: { inodeCount: number; inodesPerGroup: number; firstIno: number }): Map<string, number> {
    const a = new InodeAllocator(geometry);
    const out = new Map<string, number>([['/', 2]]);
    for (const e of t.manifest.entries) {
      if (e.path === '/') continue;
      if (e.path === '/lost+found' && e.type === 'dir') {
        out.set(e.path, geometry.firstIno);
        continue;
      }
      if (e.path === '/lost+found') a.free(geometry.firstIno);
      out.set(e.path, a.alloc(out.get(parentPath(e.path))!)!);
    }
    return out;
  }

  for (const lf of ['dir', 'file', 'none'] as const) {
    it(`the kernel sees every entry at the computed inode, with its own fields, across groups (lost+found: ${lf})`, async () => {
      if (!isRoot) throw new Error('this test mounts the image; CI runs as root');
      const t = await manyGroupsTree(20_000, lf);
      const img = join(work, `groups-${lf}.raw`);
      await withScope((scope) => buildRawImage(t, img, { sizeMb: 300, usedMb: 1, freeMb: 0, label: 'root' }, scope));
      const { superblock: sb } = await readExt4Superblock(img);
      expect(sb!.inodeCount / sb!.inodesPerGroup).toBeGreaterThanOrEqual(3);
      expect(sb!.inodesPerGroup).toBeLessThan(t.manifest.entries.length / 2);
      await execa('e2fsck', ['-fn', img]);

      const want = predicted(t, sb!);
      // Entries past the first group, and children of a folder outside group 0.
      const groupOf = (ino: number) => Math.floor((ino - 1) / sb!.inodesPerGroup);
      expect([...want.values()].filter((i) => groupOf(i) >= 2).length).toBeGreaterThan(1000);

      const mnt = join(work, `mnt-${lf}`);
      await execa('mkdir', ['-p', mnt]);
      await execa('mount', ['-o', 'loop,ro', img, mnt]);
      let listing: string;
      try {
        ({ stdout: listing } = await execa('find', [mnt, '-printf', '%i %m %U %G %T@ %P\\n']));
      } finally {
        await execa('umount', [mnt]);
      }
      expect(await loopLeftovers(img)).toEqual([]);
      const byPath = new Map(t.manifest.entries.map((e) => [e.path, e]));
      let seen = 0;
      for (const line of listing.split('\n')) {
        const [ino, mode, uid, gid, mtime, ...rest] = line.split(' ');
        const path = `/${rest.join(' ')}`.replace(/\/$/, '') || '/';
        const e = byPath.get(path);
        if (!e) {
          expect(path).toBe('/lost+found'); // mke2fs's own, when the tree has none
          continue;
        }
        seen++;
        expect({ path, ino: Number(ino), mode: parseInt(mode, 8), uid: Number(uid), gid: Number(gid), mtime: Math.floor(Number(mtime)) })
          .toEqual({ path, ino: want.get(path), mode: parseInt(e.mode, 8), uid: e.uid, gid: e.gid, mtime: e.mtime });
      }
      expect(seen).toBe(t.manifest.entries.length);

      // And part-image's own reader agrees with the tree, field for field.
      const back = await readImageManifest(img);
      const deltas = diffManifests(t.manifest, back).filter((d) => d.path !== '/lost+found');
      expect(deltas).toEqual([]);
    }, 240_000);
  }
});
