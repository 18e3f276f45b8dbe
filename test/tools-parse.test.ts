// Pure tests of argv builders and parsers, on output captured from the real tools.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildMke2fsArgs, mke2fsEnv } from '../src/tools/mke2fs.js';
import { buildE2fsckArgs, decodeFsckExit, parseE2fsckOutput } from '../src/tools/e2fsck.js';
import { buildLayoutArgs, parseDumpe2fsGroups, parseDumpe2fsHeader } from '../src/tools/dumpe2fs.js';
import { parseIcheck, parseNcheck } from '../src/tools/debugfs-icheck.js';
import { splitDebugfsOutput } from '../src/tools/debugfs.js';
import { blockRole } from '../src/image/block-owner.js';
import { hasTool } from '../src/exec.js';
import { log } from '../src/log.js';
import { buildConvertArgs } from '../src/tools/qemu-img.js';
import { formatCommand, shellQuote } from '../src/exec.js';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/tools/${name}`, import.meta.url), 'utf8');

describe('mke2fs argv', () => {
  it('formats ext4 with 4 KiB blocks, no reserved blocks, the label and the size', () => {
    expect(buildMke2fsArgs('/x/a.img', 600, { label: 'root' })).toEqual([
      '-q', '-F', '-t', 'ext4', '-b', '4096', '-I', '256', '-m', '0', '-L', 'root', '-E', 'nodiscard', '/x/a.img', '600M',
    ]);
  });
  it('pins UUID, hash seed and time for reproducible images', () => {
    const seed = '6e0c5a2a-0f3c-4e7b-9a3e-1d2c3b4a5f60';
    const args = buildMke2fsArgs('a.img', 64, { label: 'L', seed, inodes: 5000, fakeTime: 1700000000 });
    expect(args).toContain('-U');
    expect(args[args.indexOf('-U') + 1]).toBe(seed);
    expect(args[args.indexOf('-E') + 1]).toBe(`nodiscard,hash_seed=${seed}`);
    expect(args[args.indexOf('-N') + 1]).toBe('5000');
    expect(mke2fsEnv({ label: 'L', fakeTime: 1700000000 })).toEqual({ E2FSPROGS_FAKE_TIME: '1700000000' });
    expect(mke2fsEnv({ label: 'L' })).toBeUndefined();
  });
});

describe('e2fsck', () => {
  it('runs forced and read-only', () => {
    expect(buildE2fsckArgs('a.img')).toEqual(['-f', '-n', 'a.img']);
  });
  it('decodes the exit bit mask', () => {
    expect(decodeFsckExit(0)).toEqual(['clean']);
    expect(decodeFsckExit(12)).toEqual(['errors left uncorrected', 'operational error']);
  });
  it('keeps no problem lines from a clean check, and the summary', () => {
    const r = parseE2fsckOutput(0, fixture('e2fsck-clean.txt'), '');
    expect(r.problems).toEqual([]);
    expect(r.summary).toMatch(/13\/4096 files/);
  });
  it('keeps e2fsck own words for a corrupted directory block, without the prompts', () => {
    const r = parseE2fsckOutput(12, fixture('e2fsck-corrupt.txt'), '');
    expect(r.problems).toEqual(['Directory inode 2, block #0, offset 0: directory corrupted', 'e2fsck: aborted']);
  });
});

describe('dumpe2fs -h', () => {
  it('reads the superblock numbers', () => {
    const sb = parseDumpe2fsHeader(fixture('dumpe2fs-h.txt'));
    expect(sb.blockSize).toBe(4096);
    expect(sb.blockCount).toBe(4096);
    expect(sb.freeBlocks).toBeGreaterThan(0);
    expect(sb.freeBlocks).toBeLessThan(sb.blockCount);
    expect(sb.features).toContain('extent');
    expect(sb.uuid).toMatch(/^[0-9a-f-]{36}$/);
  });
  it('says which line is missing on foreign output', () => {
    expect(() => parseDumpe2fsHeader('nothing here')).toThrow(/no "Block size" line/);
  });
});

// Captured from e2fsprogs 1.47.0 on a 16 MiB image with 1 KiB blocks:
// mke2fs -t ext4 -b 1024 -N 64 -d ROOT (ROOT: /hard and /sub/data one file
// of 5000 bytes, /small), then `dumpe2fs IMG` and one `debugfs -f` script of
// `icheck 1 164 168 170 9000` and `ncheck 12 14 2`, echo lines included.
describe('dumpe2fs groups, debugfs icheck and ncheck (1 KiB blocks)', () => {
  it('reads the full listing: with 1 KiB blocks the primary superblock is block 1', () => {
    expect(buildLayoutArgs('/x/img')).toEqual(['/x/img']);
    const layout = parseDumpe2fsGroups(fixture('dumpe2fs-groups-1k.txt'));
    expect(layout).toMatchObject({ blockSize: 1024, inodeSize: 256, inodesPerGroup: 32, journalInode: 8 });
    expect(layout.groups).toEqual([
      { group: 0, first: 1, last: 8192, superblock: 1, gdt: [2, 2], reservedGdt: [3, 129], blockBitmap: 130, inodeBitmap: 132, inodeTable: [134, 141] },
      { group: 1, first: 8193, last: 16383, superblock: 8193, gdt: [8194, 8194], reservedGdt: [8195, 8321], blockBitmap: 131, inodeBitmap: 133, inodeTable: [142, 149] },
    ]);
    expect(blockRole(layout, 1)).toEqual({ kind: 'superblock', group: 0 });
    // Group 1's bitmaps and inode table sit in group 0 (flex_bg): the role still names group 1.
    expect(blockRole(layout, 133)).toEqual({ kind: 'inode-bitmap', group: 1 });
    // 4 inodes of 256 bytes per 1 KiB block: block 143 holds inodes 37-40.
    expect(blockRole(layout, 143)).toEqual({ kind: 'inode-table', group: 1, firstInode: 37, lastInode: 40 });
  });
  it('parses icheck and ncheck, each from its section of one script\'s output', () => {
    const [icheck, ncheck] = splitDebugfsOutput(fixture('debugfs-icheck-ncheck-1k.txt'), ['icheck 1 164 168 170 9000', 'ncheck 12 14 2']).map((s) => s.output);
    expect([...parseIcheck(icheck)]).toEqual([[1, undefined], [164, 12], [168, 12], [170, 14], [9000, 8]]);
    // A file with two names gets both; the root (2) has no name to print.
    expect([...parseNcheck(ncheck)]).toEqual([[12, ['/hard', '/sub/data']], [14, ['/sub']]]);
  });
  it('ignores the header lines and foreign text', () => {
    expect(parseIcheck('Block\tInode number\n')).toEqual(new Map());
    expect(parseNcheck('Inode\tPathname\nsomething else\n')).toEqual(new Map());
  });
});

describe('hasTool', () => {
  it('answers through run(): found, missing, and the command logged as a line to paste', async () => {
    const lines: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    }) as typeof process.stderr.write;
    const before = log.verbosity;
    log.setVerbosity('verbose');
    try {
      expect(await hasTool('sh')).toBe(true);
      expect(await hasTool('part-image-no-such-tool')).toBe(false);
    } finally {
      log.setVerbosity(before);
      process.stderr.write = write;
    }
    expect(lines).toEqual([`+ /bin/sh -c 'command -v "$1"' sh sh\n`, `+ /bin/sh -c 'command -v "$1"' sh part-image-no-such-tool\n`]);
  });
});

describe('qemu-img and shell quoting', () => {
  it('converts from raw', () => {
    expect(buildConvertArgs('a.raw', 'a.qcow2', 'qcow2')).toEqual(['convert', '-q', '-f', 'raw', '-O', 'qcow2', 'a.raw', 'a.qcow2']);
  });
  it('prints commands that paste into a shell', () => {
    expect(shellQuote('plain/path-1.img')).toBe('plain/path-1.img');
    expect(shellQuote("it's here")).toBe(`'it'\\''s here'`);
    expect(shellQuote('')).toBe("''");
    expect(formatCommand('debugfs', ['-R', 'stat /'], { A: 'b c' })).toBe("A='b c' debugfs -R 'stat /'");
  });
});
