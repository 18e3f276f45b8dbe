// Pure tests of argv builders and parsers, on output captured from the real tools.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildMke2fsArgs, mke2fsEnv } from '../src/tools/mke2fs.js';
import { buildE2fsckArgs, decodeFsckExit, parseE2fsckOutput } from '../src/tools/e2fsck.js';
import { parseDumpe2fsHeader } from '../src/tools/dumpe2fs.js';
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
