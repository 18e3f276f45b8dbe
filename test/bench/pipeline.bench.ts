// Benchmarks on the real Debian root (npm run bench): part-image's choices next
// to the alternatives they replace, measured in the same run.
//   build:    mke2fs + one debugfs script   vs  mke2fs -d on an extracted tree
//   readback: debugfs reader (rootless)     vs  loop mount + directory walk (root)
//   read:     tar (tar-stream)              vs  the same tree extracted (lstat + getfattr)
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, bench, describe } from 'vitest';
import { Scope } from '../../src/cleanup.js';
import { readTarTree } from '../../src/input/tar.js';
import { readDirTree } from '../../src/walk/dir.js';
import { buildRawImage } from '../../src/build/index.js';
import { readImageManifest } from '../../src/image/debugfs-reader.js';
import { readMountedImage } from '../../src/image/mount-reader.js';
import { e2fsck } from '../../src/tools/e2fsck.js';
import { debianRootTar } from '../helpers/debian-root.js';

const opts = { iterations: 5, time: 0, warmupIterations: 1 };
const scope = new Scope();
const work = await mkdtemp(join(tmpdir(), 'pi-bench-'));
const tar = await debianRootTar();
const tree = await readTarTree(tar, scope);
const extracted = join(work, 'root');
await execa('mkdir', [extracted]);
await execa('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', tar, '-C', extracted]);
const img = join(work, 'part.img');
const { sizeMb } = await buildRawImage(tree, img, { label: 'root', freeMb: 512, usedMb: tree.usedMb }, scope);
console.log(`Debian root: ${tree.manifest.entries.length} entries, ${tree.content.size} files, ${tree.usedMb} MiB; image ${sizeMb} MiB`);

afterAll(async () => {
  await scope.close();
  await rm(work, { recursive: true, force: true });
});

describe('read the input', () => {
  bench('tar, tar-stream, hashing', async () => {
    const s = new Scope();
    await readTarTree(tar, s);
    await s.close();
  }, opts);
  bench('extracted directory, lstat + getfattr, hashing', async () => {
    await readDirTree(extracted);
  }, opts);
});

describe('build the image', () => {
  bench('mke2fs + one debugfs script, with sizing (part-image)', async () => {
    await buildRawImage(tree, join(work, 'a.img'), { label: 'root', freeMb: 512, usedMb: tree.usedMb }, scope);
  }, opts);
  bench('mke2fs -d DIR, same size, no sizing (needs root to stage the tree)', async () => {
    await execa('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-L', 'root', '-d', extracted, join(work, 'b.img'), `${sizeMb}M`]);
  }, opts);
});

describe('read the image back', () => {
  bench('debugfs reader, rootless, hashing (part-image)', async () => {
    await readImageManifest(img);
  }, opts);
  bench('loop mount + walk, root, hashing', async () => {
    const s = new Scope();
    await readMountedImage(img, s);
    await s.close();
  }, opts);
});

describe('check the image', () => {
  bench('e2fsck -fn', async () => {
    await e2fsck(img);
  }, opts);
});
