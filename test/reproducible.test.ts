// Reproducible images: with --seed and SOURCE_DATE_EPOCH, the same tree gives
// the same bytes whether it comes as a tar or as a directory staged on tmpfs
// or on disk (whose readdir orders differ); --check-reproducible proves it in
// one run and, when two builds differ, says where and which entries.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { skipAllBut } from './helpers/stages.js';
import { cacheDir, debianRootTar } from './helpers/debian-root.js';
import { blocksOf, debugfsWrite, overwriteBlock } from './helpers/images.js';
import { isRoot } from './helpers/trees.js';
import { writeDemoTar } from '../src/demo/tree.js';
import { compareFiles } from '../src/image/byte-compare.js';
import { explainDifference } from '../src/stages/reproducible.js';
import { manifestUsedMb } from '../src/build/index.js';
import { readInput } from '../src/input/index.js';
import { Scope } from '../src/cleanup.js';
import { blockRole } from '../src/image/block-owner.js';
import { parseDumpe2fsGroups } from '../src/tools/dumpe2fs.js';
import { parseIcheck, parseNcheck } from '../src/tools/debugfs-icheck.js';
import { differingFields, INODE_FIELDS } from '../src/image/ext4-fields.js';

const SEED = '6e0c5a2a-0f3c-4e7b-9a3e-1d2c3b4a5f60';
const SDE = { SOURCE_DATE_EPOCH: '1700000000' };
const STAGES = skipAllBut('fsck', 'readback', 'diff', 'reproducible');

let work: string;
let diskWork: string;
let tmpfs: string;
const scope = new Scope();

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk);
  return h.digest('hex');
}

async function fsType(dir: string): Promise<string> {
  return (await execa('stat', ['-f', '-c', '%T', dir])).stdout.trim();
}

async function extract(tar: string, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await execa('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', tar, '-C', dir]);
}

async function build(input: string, out: string, ...extra: string[]) {
  const r = await runCli(['build', '--input', input, '--output', out, '--seed', SEED, ...STAGES, ...extra], { env: SDE });
  expect(r.exitCode, `${input}: ${r.stdout}${r.stderr}`).toBe(0);
  return r;
}

beforeAll(async () => {
  expect(isRoot, 'these tests mount a tmpfs: they need root').toBe(true);
  work = await mkdtemp(join(tmpdir(), 'pi-repro-test-'));
  // A staging directory on a disk filesystem, whatever TMPDIR is: the cache
  // directory lives in the home directory, on disk (checked below).
  const staging = join(cacheDir(), 'test-staging');
  await mkdir(staging, { recursive: true });
  diskWork = await mkdtemp(join(staging, 'repro-disk-'));
  tmpfs = join(work, 'tmpfs');
  await mkdir(tmpfs);
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=2g', 'tmpfs', tmpfs]);
  scope.defer('umount tmpfs', () => execa('umount', [tmpfs]).then(() => undefined));
  expect(await fsType(tmpfs)).toBe('tmpfs');
  expect(await fsType(diskWork), `${diskWork} must be on a disk filesystem, not tmpfs: point PART_IMAGE_CACHE at a disk`).not.toBe('tmpfs');
});
afterAll(async () => {
  await scope.close();
  await rm(work, { recursive: true, force: true });
  if (diskWork) await rm(diskWork, { recursive: true, force: true });
});

describe('naming blocks (captured dumpe2fs and debugfs output of a 747 MiB image)', () => {
  const fixture = (name: string) => readFile(new URL(`./fixtures/tools/${name}`, import.meta.url), 'utf8');

  it('reads the group layout: superblocks and their backups, descriptors, bitmaps, inode tables', async () => {
    const layout = parseDumpe2fsGroups(await fixture('dumpe2fs-groups.txt'));
    expect(layout).toMatchObject({ blockSize: 4096, inodeSize: 256, inodesPerGroup: 7968, journalInode: 8 });
    expect(layout.groups).toHaveLength(6);
    expect(layout.groups[1]).toEqual({
      group: 1, first: 32768, last: 65535, superblock: 32768, gdt: [32769, 32769], reservedGdt: [32770, 32862],
      blockBitmap: 96, inodeBitmap: 102, inodeTable: [605, 1102],
    });
    expect(layout.groups[2].superblock).toBeUndefined();
    expect(blockRole(layout, 0)).toEqual({ kind: 'superblock', group: 0 });
    expect(blockRole(layout, 98304)).toEqual({ kind: 'superblock', group: 3 });
    expect(blockRole(layout, 50)).toEqual({ kind: 'reserved-gdt', group: 0 });
    expect(blockRole(layout, 96)).toEqual({ kind: 'block-bitmap', group: 1 });
    // 16 inodes of 256 bytes per 4 KiB block; group 1 starts at inode 7969.
    expect(blockRole(layout, 606)).toEqual({ kind: 'inode-table', group: 1, firstInode: 7985, lastInode: 8000 });
    expect(blockRole(layout, 40000)).toEqual({ kind: 'other' });
  });

  it('parses icheck and ncheck, with debugfs\'s "//name" for names in the root', async () => {
    expect([...parseIcheck(await fixture('debugfs-icheck.txt'))]).toEqual([[0, undefined], [95, undefined], [2000, undefined], [40000, 4345], [999999, undefined]]);
    expect([...parseNcheck(await fixture('debugfs-ncheck.txt'))]).toEqual([[12, ['/bin']], [13, ['/boot']], [5000, ['/usr/share/man/de/man8/groupmems.8.gz']]]);
    expect([...parseNcheck('Inode\tPathname\n7\t/usr/bin/perl\n7\t/usr/bin/perl5.36.0\n')]).toEqual([[7, ['/usr/bin/perl', '/usr/bin/perl5.36.0']]]);
  });

  it('names the inode fields whose bytes differ', () => {
    const a = Buffer.alloc(256);
    const b = Buffer.alloc(256);
    b[0x11] = 1; // i_mtime
    b[0x7c] = 1; // i_checksum_lo
    b[0xb0] = 1; // past the fixed fields: in-inode xattrs
    expect(differingFields(a, b, INODE_FIELDS, 'in-inode xattrs')).toEqual(['i_mtime', 'i_checksum_lo', 'in-inode xattrs']);
  });
});

describe('the demo tree', () => {
  let demoTar: string;
  let image: string;
  beforeAll(async () => {
    demoTar = join(work, 'demo.tar');
    await writeDemoTar(demoTar);
    await extract(demoTar, join(tmpfs, 'demo'));
    await extract(demoTar, join(diskWork, 'demo'));
    image = join(work, 'demo-tar.img');
  });

  it('gives one image, byte for byte, from the tar, from tmpfs and from disk; --check-reproducible agrees', async () => {
    const r = await build(demoTar, image, '--check-reproducible', '--report-json', join(work, 'demo.json'));
    expect(r.stdout).toMatch(/PASS {2}reproducible .* two builds are byte-identical, sha256 [0-9a-f]{64}/);
    await build(join(tmpfs, 'demo'), join(work, 'demo-tmpfs.img'));
    await build(join(diskWork, 'demo'), join(work, 'demo-disk.img'));
    const sums = await Promise.all(['demo-tar.img', 'demo-tmpfs.img', 'demo-disk.img'].map((f) => sha256(join(work, f))));
    expect(new Set(sums).size).toBe(1);
    const report = JSON.parse(await readFile(join(work, 'demo.json'), 'utf8'));
    const stage = report.stages.find((s: { name: string }) => s.name === 'reproducible');
    expect(stage.details.sha256).toBe(sums[0]);
    expect((await readdir(work)).filter((f) => f.includes('.part-image-'))).toEqual([]);
  });

  it('sizes seeded builds from the manifest, the same for every staging', async () => {
    const sizes = await Promise.all([demoTar, join(tmpfs, 'demo'), join(diskWork, 'demo')].map(async (p) => manifestUsedMb((await readInput(p, scope)).manifest)));
    expect(new Set(sizes).size).toBe(1);
  });

  it('without --seed or SOURCE_DATE_EPOCH, --check-reproducible says at once that the build cannot be reproducible (exit 2)', async () => {
    const out = join(work, 'unseeded.img');
    const t0 = Date.now();
    const r = await runCli(['build', '--input', demoTar, '--output', out, '--free-mb', '8', ...STAGES, '--check-reproducible'], { env: SDE });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--check-reproducible: this build cannot be reproducible without --seed UUID: every build would get a random filesystem UUID/);
    expect(Date.now() - t0).toBeLessThan(4000);
    const noSde = await runCli(['build', '--input', demoTar, '--output', out, '--seed', SEED, '--check-reproducible'], { env: { SOURCE_DATE_EPOCH: '' } });
    expect(noSde.exitCode).toBe(2);
    expect(noSde.stderr).toMatch(/cannot be reproducible without SOURCE_DATE_EPOCH/);
  });

  it('two builds with different seeds: the first differing byte is the superblock UUID, and the hint names --seed', async () => {
    // (This was the run of --check-reproducible without --seed, which is now refused up front.)
    const other = join(work, 'other-seed.img');
    const r = await runCli(['build', '--input', demoTar, '--output', other, '--seed', '0e0c5a2a-0f3c-4e7b-9a3e-1d2c3b4a5f61', ...STAGES], { env: SDE });
    expect(r.exitCode, r.stderr).toBe(0);
    const cmp = await compareFiles(image, other);
    expect(cmp.identical).toBe(false);
    const messages = (await explainDifference(image, other, cmp, { seeded: false })).map((f) => `[${f.code}] ${f.message}`).join('\n');
    expect(messages).toMatch(/first differing byte at offset 1128 \(block 0: superblock of group 0, s_uuid\)/);
    expect(messages).toContain('Builds without both --seed UUID and SOURCE_DATE_EPOCH are never reproducible');
    expect(messages).toMatch(/\[reproducible-metadata\] superblock \(groups? [\d, ]+\) differs?: [\w, ]*s_uuid, [\w, ]*s_hash_seed/);
    // metadata_csum is seeded from the UUID: every inode's checksum differs, and each is named by path.
    expect(messages).toMatch(/\[reproducible-entry\] \/etc \(inode \d+\) differs: [\w, ]*i_checksum_lo, i_checksum_hi[\w, ]*; 1 block/);
  });

  describe('explaining a difference between two images', () => {
    async function variant(name: string, change: (img: string) => Promise<void>) {
      const img = join(work, `${name}.img`);
      await execa('cp', ['--sparse=always', image, img]);
      await change(img);
      const cmp = await compareFiles(image, img);
      expect(cmp.identical).toBe(false);
      return { cmp, findings: await explainDifference(image, img, cmp, { seeded: true }) };
    }

    it('names a changed inode field and the entry it belongs to, in image and manifest terms', async () => {
      const { cmp, findings } = await variant('mode', (img) => debugfsWrite(img, 'sif /etc/os-release mode 0100600'));
      expect(findings[0].code).toBe('reproducible-mismatch');
      expect(findings[0].message).toMatch(/first differing byte at offset \d+ \(block \d+: inode table of group 0, inode \d+ \/etc\/os-release, i_mode\)/);
      expect(findings[0].message).not.toContain('never reproducible');
      expect(cmp.firstOffset).toBeGreaterThan(0);
      expect(findings).toContainEqual(expect.objectContaining({
        code: 'reproducible-entry', path: '/etc/os-release',
        message: expect.stringMatching(/^\/etc\/os-release \(inode \d+\) differs: i_mode, i_checksum_lo, i_checksum_hi; reads back as mode 0644 vs 0600$/),
      }));
    });

    it('names the file whose data block differs, and both paths of a hardlink', async () => {
      const { findings } = await variant('data', async (img) => {
        const [block] = await blocksOf(img, '/usr/bin/busybox');
        await overwriteBlock(img, block, Buffer.from('not busybox'));
      });
      expect(findings[0].message).toMatch(/\(block \d+: a block of inode \d+ \/usr\/bin\/busybox\); 1 blocks differ/);
      const entry = findings.find((f) => f.code === 'reproducible-entry')!;
      expect(entry.message).toMatch(/^\/usr\/bin\/busybox, \/usr\/bin\/ping \(inode \d+\) differs: 1 block; reads back as sha256 [0-9a-f]{16}… vs [0-9a-f]{16}…, sha256/);
    });

    it('names superblock fields by name', async () => {
      const { findings } = await variant('label', (img) => execa('tune2fs', ['-L', 'other', img]).then(() => undefined));
      // tune2fs stamps the write time too.
      expect(findings[0].message).toMatch(/superblock of group 0, (s_wtime|s_volume_name)\)/);
      expect(findings).toContainEqual(expect.objectContaining({
        code: 'reproducible-metadata', message: expect.stringMatching(/^superblock \(groups 0, 1, 3\) differ: [\w, ]*s_volume_name, [\w, ]*s_checksum/),
      }));
    });
  });
});

describe('the Debian reproducibility test', () => {
  it('builds a real Debian root staged on tmpfs, on disk and as a tar into one image (same sha256)', async () => {
    const tar = await debianRootTar();
    const onTmpfs = join(tmpfs, 'debian');
    const onDisk = join(diskWork, 'debian');
    await extract(tar, onTmpfs);
    await extract(tar, onDisk);
    // The point of the test: the two staging filesystems list directories in different orders.
    const order = async (dir: string) => (await execa('ls', ['-f', join(dir, 'usr/bin')])).stdout;
    expect(await order(onTmpfs)).not.toBe(await order(onDisk));

    const images = { tmpfs: join(work, 'debian-tmpfs.img'), disk: join(work, 'debian-disk.img'), tar: join(work, 'debian-tar.img') };
    await build(onTmpfs, images.tmpfs);
    await build(onDisk, images.disk);
    await build(tar, images.tar);
    const sums = { tmpfs: await sha256(images.tmpfs), disk: await sha256(images.disk), tar: await sha256(images.tar) };
    process.stderr.write(`Debian root, seed ${SEED}, SOURCE_DATE_EPOCH ${SDE.SOURCE_DATE_EPOCH}:\n`
      + `  staged on tmpfs: ${sums.tmpfs}\n  staged on disk:  ${sums.disk}\n  from the tar:    ${sums.tar}\n`);
    expect(sums.disk).toBe(sums.tmpfs);
    expect(sums.tar).toBe(sums.tmpfs);
  }, 900_000);
});
