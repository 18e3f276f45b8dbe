// Pure tests of the parsers that judge images: e2fsck -fn output (captured
// from real damaged images, test/fixtures/e2fsck/make-fixtures.sh), qemu-img
// info JSON (test/fixtures/qemu-img/make-fixtures.sh), superblocks and qcow2
// headers written by the real mke2fs and qemu-img, and vmdk descriptors.
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HARMLESS, parseE2fsckOutput } from '../../src/tools/e2fsck.js';
import { infoReferences, parseQemuImgInfo, buildToRawArgs, buildInfoArgs } from '../../src/tools/qemu-img.js';
import { crc32c, parseSuperblock, superblockProblems, superblockWarnings } from '../../src/image/superblock.js';
import { parseQcow2Header, parseVmdkDescriptor, parseVmdkSparseHeader, qcow2References } from '../../src/image/foreign-refs.js';

const fixture = (dir: string, name: string) => readFileSync(new URL(`../fixtures/${dir}/${name}`, import.meta.url), 'utf8');
const fsck = (name: string) => parseE2fsckOutput(Number(fixture('e2fsck', `${name}.exit`)), fixture('e2fsck', `${name}.txt`), '');

describe('e2fsck -fn output: every message is a finding unless HARMLESS says why not', () => {
  it('a clean check has no message', () => {
    const r = fsck('clean');
    expect(r.exitCode).toBe(0);
    expect(r.messages).toEqual([]);
    expect(r.summary).toMatch(/14\/2048 files/);
  });

  it('a truncated image: exit 0, but the size warning is one problem with both sizes', () => {
    const r = fsck('truncated');
    expect(r.exitCode).toBe(0);
    expect(r.problems).toEqual([
      'The filesystem size (according to the superblock) is 2048 blocks; The physical size of the device is 2047 blocks; Either the superblock or the partition table is likely to be corrupt!',
    ]);
  });

  it('a journal that needs recovery: exit 0, and the skipped recovery is a problem', () => {
    const r = fsck('needs-recovery');
    expect(r.exitCode).toBe(0);
    expect(r.problems).toEqual(['Warning: skipping journal recovery because doing a read-only filesystem check.']);
  });

  it('wrong superblock free totals are harmless, with the reason', () => {
    const r = fsck('free-counts');
    expect(r.exitCode).toBe(0);
    expect(r.problems).toEqual([]);
    expect(r.messages.map((m) => m.text)).toEqual(['Free blocks count wrong (5, counted=883).', 'Free inodes count wrong (7, counted=2034).']);
    for (const m of r.messages) expect(m.harmless).toMatch(/kernel recounts/);
  });

  it('a superblock time in the future is harmless; its continuation line is part of it', () => {
    const r = fsck('future-mount-time');
    expect(r.problems).toEqual([]);
    expect(r.messages).toHaveLength(1);
    expect(r.messages[0].text).toMatch(/^Superblock last mount time \(Thu Jan {2}1 00:00:00 2099, now = .*\) is in the future\.$/);
    expect(r.messages[0].harmless).toMatch(/clock/);
  });

  it('a cleared directory: every message, inline prompts cut, the closing WARNING left out', () => {
    const r = fsck('clri-dir');
    expect(r.exitCode).toBe(4);
    expect(r.problems).toEqual([
      "Entry 'd' in / (2) has deleted/unused inode 13.",
      "Entry 'd' in / (2) has an incorrect filetype (was 2, should be 0).",
      'Inode 2 ref count is 4, should be 3.',
      'Unattached inode 14',
      'Block bitmap differences:  -1163',
      'Inode bitmap differences:  -13',
      'Directories count wrong for group #0 (3, counted=2).',
    ]);
  });

  it('per-group counts are not harmless (only the superblock totals are)', () => {
    const r = parseE2fsckOutput(0, 'Free blocks count wrong for group #0 (5, counted=883).\nFix? no\n', '');
    expect(r.problems).toEqual(['Free blocks count wrong for group #0 (5, counted=883).']);
  });

  it('words it does not know (another language) are problems: the parser fails closed', () => {
    const r = parseE2fsckOutput(0, 'e2fsck 1.47.0 (5-Feb-2023)\nDurchgang 1: Inodes, Blöcke und Größen werden geprüft\n', '');
    expect(r.problems).toEqual(['Durchgang 1: Inodes, Blöcke und Größen werden geprüft']);
  });

  it('every HARMLESS entry gives a reason', () => {
    for (const h of HARMLESS) expect(h.reason.length).toBeGreaterThan(40);
  });
});

describe('qemu-img info JSON: references outside the image', () => {
  const info = (name: string) => parseQemuImgInfo(fixture('qemu-img', `${name}.json`));

  it('a backing file, as a path and as a json: spec', () => {
    expect(infoReferences(info('qcow2-backing'), 'backing.qcow2')).toEqual([{ kind: 'backing file', target: 'host.img' }]);
    const j = infoReferences(info('qcow2-json-backing'), 'json.qcow2');
    expect(j).toHaveLength(1);
    expect(j[0].target).toMatch(/^json:\{"driver":"raw","file":\{"driver":"file","filename":"host.img"\}\}$/);
  });

  it('an external data file', () => {
    expect(infoReferences(info('qcow2-data-file'), 'data-file.qcow2')).toEqual([{ kind: 'external data file', target: 'data.img' }]);
  });

  it('a flat vmdk: its extent is another file', () => {
    expect(infoReferences(info('vmdk-flat'), 'flat.vmdk')).toEqual([{ kind: 'extent', target: 'flat-flat.vmdk' }]);
  });

  it('self-contained qcow2, monolithicSparse and streamOptimized vmdk: none', () => {
    expect(infoReferences(info('qcow2-self'), 'self.qcow2')).toEqual([]);
    expect(infoReferences(info('vmdk-sparse'), 'sparse.vmdk')).toEqual([]);
    expect(infoReferences(info('vmdk-stream'), 'stream.vmdk')).toEqual([]);
    expect(info('vmdk-stream')).toMatchObject({ format: 'vmdk', virtualSize: 8388608 });
  });
});

describe('qemu-img argv', () => {
  it('names the format for info, and converts qcow2 through a json: spec with backing null', () => {
    expect(buildInfoArgs('/x/a b.qcow2', 'qcow2')).toEqual(['info', '--output=json', '-f', 'qcow2', '/x/a b.qcow2']);
    const args = buildToRawArgs('/x/a "b".qcow2', 'qcow2', '/t/raw');
    expect(args.slice(0, 4)).toEqual(['convert', '-q', '-O', 'raw']);
    expect(JSON.parse(args[4].slice('json:'.length))).toEqual({ driver: 'qcow2', file: { driver: 'file', filename: '/x/a "b".qcow2' }, backing: null });
    expect(JSON.parse(buildToRawArgs('/x/a.vmdk', 'vmdk', '/t/raw')[4].slice(5))).toEqual({ driver: 'vmdk', file: { driver: 'file', filename: '/x/a.vmdk' } });
  });
});

describe('vmdk descriptors', () => {
  it('finds every extent line qemu would open, whatever its access and type', () => {
    const d = parseVmdkDescriptor([
      '# Disk DescriptorFile', 'version=1', 'CID=b0e551bc', 'parentCID=ffffffff', 'createType="twoGbMaxExtentFlat"', '',
      '# Extent description',
      'RW 16384 FLAT "/some/host/file" 0',
      '  RDONLY 8 SPARSE "rel-s001.vmdk"',
      'RW 4 ZERO "z"',
      'ddb.adapterType = "ide"',
    ].join('\n'));
    expect(d.extents).toEqual(['RW 16384 FLAT "/some/host/file" 0', 'RDONLY 8 SPARSE "rel-s001.vmdk"', 'RW 4 ZERO "z"']);
    expect(d.parent).toBeUndefined();
  });

  it('finds a parent, and stops at the first NUL as qemu\'s strstr does', () => {
    expect(parseVmdkDescriptor('version=1\nparentFileNameHint="/host/base.vmdk"\n').parent).toBe('/host/base.vmdk');
    expect(parseVmdkDescriptor('version=1\n\0parentFileNameHint="/host/base.vmdk"\n').parent).toBeUndefined();
  });

  it('reads a sparse header: capacity and where the embedded descriptor is', () => {
    const h = Buffer.alloc(512);
    h.write('KDMV', 0, 'latin1');
    h.writeUInt32LE(1, 4);
    h.writeBigUInt64LE(0n, 12);
    h.writeBigUInt64LE(1n, 28);
    h.writeBigUInt64LE(20n, 36);
    expect(parseVmdkSparseHeader(h)).toEqual({ version: 1, capacity: 0n, descOffset: 1n, descSize: 20n });
    expect(parseVmdkSparseHeader(Buffer.alloc(512))).toBe('no vmdk sparse header');
  });
});

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-faults-parsers-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('qcow2 headers written by qemu-img', () => {
  const head = async (f: string) => (await readFile(f)).subarray(0, 2 * 1024 * 1024);

  it('a backing file (path and json: form) and an external data file; none in a plain qcow2', async () => {
    const host = join(work, 'host.img');
    await execa('truncate', ['-s', '8M', host]);
    const backed = join(work, 'b.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', host, '-F', 'raw', backed, '8M']);
    const json = join(work, 'j.qcow2');
    const spec = `json:${JSON.stringify({ driver: 'raw', file: { driver: 'file', filename: host } })}`;
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', spec, '-F', 'raw', json, '8M']);
    const data = join(work, 'd.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${host},data_file_raw=on`, data, '8M']);
    const plain = join(work, 'p.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', plain, '8M']);

    const refs = async (f: string) => {
      const h = parseQcow2Header(await head(f));
      if (typeof h === 'string') throw new Error(h);
      return qcow2References(h);
    };
    expect(await refs(backed)).toEqual([{ kind: 'backing file', target: host }]);
    expect(await refs(json)).toEqual([{ kind: 'backing file', target: spec }]);
    expect(await refs(data)).toEqual([{ kind: 'external data file', target: host }]);
    expect(await refs(plain)).toEqual([]);
    expect(parseQcow2Header(await head(plain))).toMatchObject({ version: 3, virtualSize: 8n * 1024n * 1024n, cryptMethod: 0 });
  });

  it('is not fooled by a file that only starts like one', () => {
    expect(parseQcow2Header(Buffer.from('QFI\xfb', 'latin1'))).toBe('no qcow2 header');
    const v9 = Buffer.alloc(512);
    v9.writeUInt32BE(0x514649fb, 0);
    v9.writeUInt32BE(9, 4);
    expect(parseQcow2Header(v9)).toMatch(/version 9/);
  });
});

describe('superblocks written by mke2fs', () => {
  const sbOf = async (img: string) => (await readFile(img)).subarray(1024, 2048);

  it('reads block size and count, and checks the metadata_csum checksum (raw CRC32C as e2fsprogs computes it)', async () => {
    const img = join(work, 'sb.img');
    await execa('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '1024', img, '3000K']);
    const sb = parseSuperblock(await sbOf(img));
    if (typeof sb === 'string') throw new Error(sb);
    expect(sb.blockSize).toBe(1024);
    expect(sb.blockCount).toBe(3000n);
    expect(sb.checksumOk).toBe(true);
    expect(superblockProblems(sb, 3000 * 1024)).toEqual([]);
    expect(superblockWarnings(sb)).toEqual([]);
    expect(superblockProblems(sb, 3000 * 1024 - 1)).toEqual([expect.objectContaining({ code: 'truncated', expected: 3072000, actual: 3071999 })]);
    // dumpe2fs says the same.
    const dump = (await execa('dumpe2fs', ['-h', img])).stdout;
    expect(dump).toMatch(/^Block count:\s+3000$/m);
    expect(dump).toContain(`Checksum:                 0x${sb.storedChecksum!.toString(16).padStart(8, '0')}`);
  });

  it('a flipped byte breaks the checksum; a 64bit block count uses the high word', async () => {
    const img = join(work, 'sb64.img');
    await execa('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-O', '64bit', img, '8M']);
    const buf = Buffer.from(await sbOf(img));
    buf[0x78] ^= 0x20; // a letter of the volume label
    const sb = parseSuperblock(buf);
    if (typeof sb === 'string') throw new Error(sb);
    expect(sb.checksumOk).toBe(false);
    expect(superblockProblems(sb, 8 << 20).map((p) => p.code)).toEqual(['superblock-checksum']);
    buf.writeUInt32LE(1, 0x150);
    const big = parseSuperblock(buf) as Exclude<ReturnType<typeof parseSuperblock>, string>;
    expect(big.blockCount).toBe((1n << 32n) + 2048n);
  });

  it('names what is not a superblock', () => {
    expect(parseSuperblock(Buffer.alloc(100))).toMatch(/ends before the superblock/);
    expect(parseSuperblock(Buffer.alloc(1024))).toMatch(/no ext2\/3\/4 superblock magic 0xEF53 at byte 1080/);
    const bad = Buffer.alloc(1024);
    bad.writeUInt16LE(0xef53, 0x38);
    bad.writeUInt32LE(9, 0x18);
    expect(parseSuperblock(bad)).toMatch(/impossible block size/);
  });

  it('CRC32C: the standard check value, as the raw register e2fsprogs keeps', () => {
    // CRC-32C("123456789") = 0xe3069283 (final XOR included); the raw register is its complement.
    expect((~crc32c(0xffffffff, Buffer.from('123456789')) >>> 0).toString(16)).toBe('e3069283');
  });
});
