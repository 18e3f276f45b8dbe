// The fault matrix of issue 8 §1: an image is judged on what the kernel would
// see. Every case is a real image damaged with the real tools (truncate,
// debugfs -w, byte writes) or a real qcow2/vmdk made with qemu-img, run
// through the CLI as a user would: verify, manifest, diff and boot. After
// each, the host is checked: the private TMPDIR is empty, no loop device backs
// the files, no process of the case is left, nothing appeared beside the
// image, and the image (and any file it refers to) is byte-for-byte unchanged.
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, open, readFile, readdir, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type CliResult } from '../helpers/cli.js';
import { blocksOf, debugfsWrite, overwriteBlock } from '../helpers/images.js';
import { loopLeftovers } from '../helpers/mounts.js';
import { skipBoot } from '../helpers/stages.js';
import { makeSampleTree } from '../helpers/trees.js';

let work: string;
let tree: string;
let good: string;
let blockSize: number;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-faults-images-'));
  tree = join(work, 'tree');
  await makeSampleTree(tree);
  good = join(work, 'good.img');
  const r = await runCli(['build', '--input', tree, '--output', good, '--free-mb', '4', ...skipBoot()]);
  if (r.exitCode !== 0) throw new Error(`the sample image did not build:\n${r.stdout}\n${r.stderr}`);
  blockSize = (await readFile(good)).readUInt32LE(1024 + 0x18) === 2 ? 4096 : 1024;
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// One case: its own folder, its own TMPDIR, and the host checked afterwards.

interface Case {
  dir: string;
  tmp: string;
  run(args: string[]): Promise<CliResult>;
  /** Files whose bytes must not change (the image, what it refers to). */
  watch(...files: string[]): Promise<void>;
  /** Asserts the host state after the case's runs. */
  checkHost(): Promise<void>;
}

const sha = async (f: string) => createHash('sha256').update(await readFile(f)).digest('hex');

async function newCase(name: string): Promise<Case> {
  const dir = await mkdtemp(join(work, `${name}-`));
  const tmp = join(dir, 'tmp');
  await mkdir(tmp);
  const watched = new Map<string, string>();
  let listing: string[] | undefined;
  return {
    dir,
    tmp,
    run: (args) => runCli(args, { env: { TMPDIR: tmp }, cwd: dir }),
    async watch(...files) {
      for (const f of files) watched.set(f, await sha(f));
      listing = (await readdir(dir)).sort();
    },
    async checkHost() {
      expect(await readdir(tmp), 'temporary files left in the private TMPDIR').toEqual([]);
      expect((await readdir(dir)).sort(), 'files appeared beside the image').toEqual(listing);
      for (const [f, h] of watched) {
        expect(await sha(f), `${f} changed`).toBe(h);
        expect(await loopLeftovers(f), `loop devices on ${f}`).toEqual([]);
      }
      const procs = await execa('pgrep', ['-af', dir], { reject: false });
      expect(procs.stdout.split('\n').filter((l) => l && !l.includes('pgrep')), 'processes of the case left running').toEqual([]);
    },
  };
}

const VERIFY = (img: string) => ['verify', img, '--input', tree, ...skipBoot()];
const NOT_READABLE = /is not a readable ext4 image: .+; run part-image verify .+ for the fsck findings/;

async function copyGood(c: Case, name = 'image.img'): Promise<string> {
  const img = join(c.dir, name);
  await copyFile(good, img);
  return img;
}

/** Where an inode lies in the image: the byte offset of its 256-byte record. */
async function inodeOffset(img: string, path: string): Promise<number> {
  const r = await execa('debugfs', ['-R', `imap "${path}"`, img]);
  const m = /located at block (\d+), offset (0x[0-9a-f]+)/.exec(r.stdout);
  if (!m) throw new Error(`debugfs imap ${path}: ${r.stdout}`);
  return Number(m[1]) * blockSize + Number(m[2]);
}

async function writeAt(img: string, offset: number, bytes: Buffer): Promise<void> {
  const fh = await open(img, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, offset);
  } finally {
    await fh.close();
  }
}

async function flipByte(img: string, offset: number): Promise<void> {
  const fh = await open(img, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, offset);
    b[0] ^= 0x55;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------
// Damaged raw images: verify rejects (exit 1, never 0); manifest, diff and boot
// refuse them as bad input (exit 2) with the one message.

const DAMAGE: { name: string; finding: RegExp; damage: (img: string) => Promise<void> }[] = [
  { name: 'cut by 4096 bytes', finding: /truncated/, damage: async (img) => truncate(img, (await stat(img)).size - 4096) },
  { name: 'cut by one byte', finding: /truncated/, damage: async (img) => truncate(img, (await stat(img)).size - 1) },
  { name: 'cut to half its size', finding: /truncated/, damage: async (img) => truncate(img, Math.floor((await stat(img)).size / 2)) },
  { name: 'cut to just past the superblock', finding: /truncated/, damage: (img) => truncate(img, 2049) },
  { name: 'a file inode cleared (clri)', finding: /fsck/, damage: (img) => debugfsWrite(img, 'clri /srv/owned') },
  { name: 'a directory inode cleared (clri)', finding: /fsck/, damage: (img) => debugfsWrite(img, 'clri "/srv/odd names"') },
  { name: 'a bad extent header', finding: /fsck/, damage: (img) => debugfsWrite(img, 'sif /srv/big.bin block[0] 0') },
  { name: 'an extent pointing outside the filesystem', finding: /fsck/, damage: (img) => debugfsWrite(img, 'sif /srv/big.bin block[5] 99999999') },
  { name: 'a flipped superblock byte (block count)', finding: /superblock-checksum/, damage: (img) => flipByte(img, 1024 + 0x04) },
  { name: 'a flipped superblock byte (label)', finding: /superblock-checksum/, damage: (img) => flipByte(img, 1024 + 0x78) },
  { name: 'a zeroed group descriptor', finding: /fsck/, damage: (img) => writeAt(img, blockSize === 1024 ? 2048 : 4096, Buffer.alloc(64)) },
  { name: 'a directory block overwritten', finding: /fsck/, damage: async (img) => overwriteBlock(img, (await blocksOf(img, '/srv'))[0], Buffer.alloc(blockSize, 0xa5), blockSize) },
  { name: 'the root directory block overwritten with random bytes', finding: /fsck/, damage: async (img) => overwriteBlock(img, (await blocksOf(img, '/'))[0], createHash('sha512').update('x').digest().subarray(0, 64), blockSize) },
  { name: 'a flipped inode byte (inode checksum)', finding: /fsck/, damage: async (img) => flipByte(img, (await inodeOffset(img, '/srv/owned')) + 0x64) },
  { name: 'a journal that needs recovery', finding: /journal/, damage: (img) => debugfsWrite(img, 'feature needs_recovery') },
  {
    name: 'an incompatible feature the kernel does not know',
    finding: /features/,
    damage: async (img) => {
      const incompat = (await readFile(img)).readUInt32LE(1024 + 0x60);
      await debugfsWrite(img, `ssv feature_incompat 0x${(incompat | 0x800).toString(16)}`);
    },
  },
];

describe.each(DAMAGE)('damaged image: $name', ({ name, finding, damage }) => {
  it('verify rejects it (exit 1) with findings; manifest, diff and boot refuse it (exit 2) naming why; the host is clean', async () => {
    const c = await newCase(name.replace(/\W+/g, '-'));
    const img = await copyGood(c);
    await damage(img);
    await c.watch(img);
    const json = join(c.tmp, '..', 'report.json');
    const v = await c.run([...VERIFY(img), '--report-json', json]);
    expect(v.exitCode, v.stdout + v.stderr).toBe(1);
    expect(v.stdout).toMatch(/REJECTED/);
    const report = JSON.parse(await readFile(json, 'utf8'));
    await rm(json);
    expect(report.accepted).toBe(false);
    const fsck = report.stages.find((s: { name: string }) => s.name === 'fsck');
    expect(fsck.status).toBe('failed');
    expect(fsck.findings.map((f: { code: string }) => f.code).join(' ')).toMatch(finding);
    const readback = report.stages.find((s: { name: string }) => s.name === 'readback');
    expect(readback.status).toBe('failed');
    expect(readback.findings).toEqual([expect.objectContaining({ code: 'unreadable' })]);
    // Every failure is a verdict of the stage itself, none a crash turned into a finding.
    const crashes = report.stages.flatMap((s: { name: string; findings: { code: string; message: string }[] }) => s.findings.filter((f) => f.code === 'stage-error').map((f) => `${s.name}: ${f.message}`));
    expect(crashes).toEqual([]);

    const [m, d, b] = await Promise.all([c.run(['manifest', img]), c.run(['diff', tree, img]), c.run(['boot', img, '--nspawn'])]);
    for (const r of [m, d, b]) {
      expect(r.exitCode, r.stderr).toBe(2);
      expect(r.stderr).toMatch(NOT_READABLE);
      expect(r.stderr).not.toMatch(/command failed/);
    }
    expect(m.stdout).toBe('');
    await c.checkHost();
  });
});

it('truncated: the fsck finding names both sizes (the file and what the superblock says)', async () => {
  const c = await newCase('truncated-sizes');
  const img = await copyGood(c);
  const size = (await stat(img)).size;
  await truncate(img, size - 4096);
  const json = join(c.dir, 'r.json');
  const v = await c.run([...VERIFY(img), '--report-json', json]);
  expect(v.exitCode).toBe(1);
  const fsck = JSON.parse(await readFile(json, 'utf8')).stages.find((s: { name: string }) => s.name === 'fsck');
  expect(fsck.findings).toContainEqual(expect.objectContaining({ code: 'truncated', expected: size, actual: size - 4096 }));
  const t = fsck.findings.find((f: { code: string }) => f.code === 'truncated');
  expect(t.message).toContain(`the file is ${size - 4096} bytes`);
  expect(t.message).toContain(`(${size} bytes)`);
  // e2fsck's own warning (it exits 0 with it) is a finding too.
  expect(fsck.findings.map((f: { message: string }) => f.message).join('\n')).toMatch(/The physical size of the device is/);
});

it('an errors flag in the superblock: the kernel mounts it, so manifest reads it, but verify rejects it', async () => {
  const c = await newCase('errors-flag');
  const img = await copyGood(c);
  await debugfsWrite(img, 'ssv state 3');
  await c.watch(img);
  const json = join(c.tmp, '..', 'r.json');
  const v = await c.run([...VERIFY(img), '--report-json', json]);
  expect(v.exitCode).toBe(1);
  const fsck = JSON.parse(await readFile(json, 'utf8')).stages.find((s: { name: string }) => s.name === 'fsck');
  await rm(json);
  expect(fsck.findings).toContainEqual(expect.objectContaining({ code: 'superblock-state', message: expect.stringMatching(/records errors/) }));
  const m = await c.run(['manifest', img, '--no-hash']);
  expect(m.exitCode).toBe(0);
  await c.checkHost();
});

it('harmless e2fsck messages (wrong superblock free totals) are listed with their reason and do not reject', async () => {
  const c = await newCase('harmless');
  const img = await copyGood(c);
  await debugfsWrite(img, 'ssv free_blocks_count 5');
  const json = join(c.dir, 'r.json');
  const v = await c.run([...VERIFY(img), '--report-json', json]);
  expect(v.exitCode, v.stdout).toBe(0);
  const fsck = JSON.parse(await readFile(json, 'utf8')).stages.find((s: { name: string }) => s.name === 'fsck');
  expect(fsck.details.harmless).toEqual([{ message: expect.stringMatching(/^Free blocks count wrong \(5, counted=\d+\)\.$/), reason: expect.stringMatching(/kernel recounts/) }]);
});

// ---------------------------------------------------------------------------
// Files that are not images at all.

const NOT_IMAGES: { name: string; make: (f: string) => Promise<void>; message: RegExp; verifyExit: number }[] = [
  { name: 'an empty file', make: (f) => writeFile(f, ''), message: /neither an ext4 image \(the file is only 0 bytes.*\) nor a tar archive \(the file is empty\)/, verifyExit: 2 },
  { name: 'a 512-byte file of zeros', make: (f) => writeFile(f, Buffer.alloc(512)), message: /neither an ext4 image \(the file is only 512 bytes.*\) nor a tar archive \(its first 512 bytes are zeros/, verifyExit: 2 },
  { name: 'a 100-byte file', make: (f) => writeFile(f, Buffer.alloc(100, 7)), message: /neither an ext4 image \(the file is only 100 bytes.*\) nor a tar archive \(the file is only 100 bytes, shorter than one 512-byte tar header\)/, verifyExit: 2 },
  { name: 'a 1 MiB file of zeros', make: (f) => writeFile(f, Buffer.alloc(1 << 20)), message: /neither an ext4 image \(no ext2\/3\/4 superblock magic 0xEF53 at byte 1080\) nor a tar archive \(its first 512 bytes are zeros/, verifyExit: 2 },
  { name: 'random bytes', make: (f) => writeFile(f, createHash('sha512').update('r').digest().toString('hex').repeat(64)), message: /neither an ext4 image \(no ext2\/3\/4 superblock magic .*\) nor a tar archive \(.*checksum does not match\)/, verifyExit: 2 },
  { name: 'a text file', make: (f) => writeFile(f, 'not an image\n'), message: /neither an ext4 image \(the file is only 13 bytes.*\) nor a tar archive \(the file is only 13 bytes/, verifyExit: 2 },
  {
    name: 'a file with only the ext4 magic',
    make: async (f) => {
      const b = Buffer.alloc(1 << 20);
      b.writeUInt16LE(0xef53, 1080);
      await writeFile(f, b);
    },
    message: NOT_READABLE,
    verifyExit: 1,
  },
];

describe.each(NOT_IMAGES)('not an image: $name', ({ name, make, message, verifyExit }) => {
  it('manifest and diff exit 2 naming both attempts (or why the image is unreadable), never an empty manifest; verify never accepts', async () => {
    const c = await newCase(name.replace(/\W+/g, '-'));
    const f = join(c.dir, 'thing.img');
    await make(f);
    await c.watch(f);
    const [m, d, v] = await Promise.all([c.run(['manifest', f]), c.run(['diff', f, tree]), c.run(VERIFY(f))]);
    for (const r of [m, d]) {
      expect(r.exitCode, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
    }
    expect(m.stdout).toBe('');
    expect(v.exitCode, v.stdout + v.stderr).toBe(verifyExit);
    expect(v.stdout).not.toMatch(/ACCEPTED/);
    await c.checkHost();
  });
});

// ---------------------------------------------------------------------------
// qcow2 and vmdk files that refer to other files: refused (exit 2) by every
// command, naming the reference, and the referenced host file is never read.
//
// Proof that it is not read: its atime, set 3 days back (relatime updates it
// on the first read after that), stays; a positive control shows that qemu-img
// following the same reference does move it on this filesystem.

const readAtime = async (f: string) => (await stat(f)).atimeMs;

async function ageAtime(f: string): Promise<number> {
  const old = new Date(Date.now() - 3 * 86400_000);
  await utimes(f, old, new Date(Date.now() - 4 * 86400_000));
  return readAtime(f);
}

function vmdkDescriptor(extents: string[], extra = ''): string {
  return ['# Disk DescriptorFile', 'version=1', 'CID=12345678', 'parentCID=ffffffff', 'createType="monolithicFlat"', extra, '', '# Extent description', ...extents, ''].join('\n');
}

/** A real monolithicSparse vmdk of `raw`, with its embedded descriptor rewritten (and, with capacity0, a header that hands over to it). */
async function sparseVmdkWith(raw: string, out: string, edit: (desc: string) => string, capacity0 = false): Promise<void> {
  await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vmdk', raw, out]);
  const b = await readFile(out);
  const off = Number(b.readBigUInt64LE(28)) * 512;
  const len = Number(b.readBigUInt64LE(36)) * 512;
  const desc = b.subarray(off, off + len).toString('latin1').split('\0')[0];
  const next = Buffer.alloc(len);
  next.write(edit(desc), 'latin1');
  next.copy(b, off);
  if (capacity0) b.writeBigUInt64LE(0n, 12);
  await writeFile(out, b);
}

interface Foreign {
  name: string;
  format: 'qcow2' | 'vmdk';
  /** Makes the image at `img` referring to `host` (a real ext4 image of the sample tree). */
  make: (img: string, host: string, c: Case) => Promise<string[]>;
}

const FOREIGN: Foreign[] = [
  {
    name: 'qcow2 backed by a host ext4 image',
    format: 'qcow2',
    make: async (img, host) => {
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', host, '-F', 'raw', img, String((await stat(host)).size)]);
      return [host];
    },
  },
  {
    name: 'qcow2 with a json: backing spec',
    format: 'qcow2',
    make: async (img, host) => {
      const spec = `json:${JSON.stringify({ driver: 'raw', file: { driver: 'file', filename: host } })}`;
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', spec, '-F', 'raw', img, String((await stat(host)).size)]);
      return [host];
    },
  },
  {
    name: 'qcow2 in a backing chain',
    format: 'qcow2',
    make: async (img, host, c) => {
      const mid = join(c.dir, 'mid.qcow2');
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', host, '-F', 'raw', mid, String((await stat(host)).size)]);
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', mid, '-F', 'qcow2', img, String((await stat(host)).size)]);
      return [mid, host];
    },
  },
  {
    name: 'qcow2 with an external data file',
    format: 'qcow2',
    make: async (img, host) => {
      // qemu-img create rewrites the data file: put the host image there afterwards.
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${host},data_file_raw=on`, img, String((await stat(good)).size)]);
      await copyFile(good, host);
      return [host];
    },
  },
  {
    name: 'a flat vmdk descriptor pointing at a host file',
    format: 'vmdk',
    make: async (img, host) => {
      await writeFile(img, vmdkDescriptor([`RW ${(await stat(host)).size / 512} FLAT "${host}" 0`]));
      return [host];
    },
  },
  {
    name: 'a vmdk descriptor with two extents in host files',
    format: 'vmdk',
    make: async (img, host, c) => {
      const other = join(c.dir, 'other-host-file');
      await writeFile(other, Buffer.alloc(1 << 20, 1));
      const half = (await stat(host)).size / 512 / 2;
      await writeFile(img, vmdkDescriptor([`RW ${half} FLAT "${host}" 0`, `RW ${half} FLAT "${other}" ${half}`]));
      return [host, other];
    },
  },
  {
    name: 'a sparse vmdk naming a parent (parentFileNameHint)',
    format: 'vmdk',
    make: async (img, host, c) => {
      const parent = join(c.dir, 'parent.vmdk');
      await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vmdk', host, parent]);
      await sparseVmdkWith(good, img, (d) => d.replace(/^parentCID=.*$/m, (l) => `${l}\nparentFileNameHint="${parent}"`));
      return [parent];
    },
  },
  {
    name: 'a sparse vmdk header of capacity 0 handing over to an embedded descriptor with a host extent',
    format: 'vmdk',
    make: async (img, host) => {
      const sectors = (await stat(host)).size / 512;
      await sparseVmdkWith(good, img, () => vmdkDescriptor([`RW ${sectors} FLAT "${host}" 0`]), true);
      return [host];
    },
  },
];

describe.each(FOREIGN)('foreign reference: $name', ({ name, format, make }) => {
  it('verify, manifest, diff and boot exit 2 naming the reference, and read no byte of the referenced file', async () => {
    const c = await newCase(name.replace(/\W+/g, '-').slice(0, 40));
    const host = join(c.dir, 'host.img');
    await copyFile(good, host);
    const img = join(c.dir, `image.${format}`);
    const referenced = await make(img, host, c);
    await c.watch(img, ...referenced);
    const before = await Promise.all(referenced.map(ageAtime));

    const runs = [await c.run(VERIFY(img)), await c.run(['manifest', img]), await c.run(['diff', tree, img]), await c.run(['boot', img, '--nspawn'])];
    for (const r of runs) {
      expect(r.exitCode, r.stdout + r.stderr).toBe(2);
      expect(r.stderr).toMatch(/refers to files outside itself: .*; part-image reads only self-contained images, and opened none of them/);
      expect(r.stderr).toContain(referenced[0]);
      expect(r.stdout).not.toMatch(/ACCEPTED/);
    }
    expect(await Promise.all(referenced.map(readAtime)), 'a referenced file was read').toEqual(before);
    await c.checkHost();

    // Positive control: qemu-img following the reference does read it, and this filesystem shows it.
    const out = join(c.dir, 'followed.raw');
    await execa('qemu-img', ['convert', '-q', '-f', format, '-O', 'raw', img, out]);
    await rm(out);
    expect(await readAtime(referenced[0]), 'the atime proof does not work on this filesystem').not.toBe(before[0]);
  });
});

describe('foreign reference: qemu-img info itself would open a vmdk extent; part-image does not even open it', () => {
  it.each([false, true])('a FIFO as the extent (sparse header of capacity 0: %s) is never opened', async (capacity0) => {
    const c = await newCase(`fifo-${capacity0}`);
    const fifo = join(c.dir, 'host.fifo');
    await execa('mkfifo', [fifo]);
    const img = join(c.dir, 'image.vmdk');
    if (capacity0) await sparseVmdkWith(good, img, () => vmdkDescriptor([`RW 2048 FLAT "${fifo}" 0`]), true);
    else await writeFile(img, vmdkDescriptor([`RW 2048 FLAT "${fifo}" 0`]));
    // A writer blocks in open() until someone opens the FIFO for reading.
    const opened = async (during: () => Promise<unknown>) => {
      const writer = execa('sh', ['-c', 'exec 3>"$1"; echo opened', 'sh', fifo], { reject: false });
      await during();
      await new Promise((r) => setTimeout(r, 300));
      writer.kill('SIGKILL');
      return (await writer).stdout.includes('opened');
    };
    expect(await opened(() => c.run(['manifest', img]))).toBe(false);
    expect(await opened(() => c.run(VERIFY(img)))).toBe(false);
    // Positive control: qemu-img info opens it.
    expect(await opened(() => execa('qemu-img', ['info', '-f', 'vmdk', img], { reject: false, timeout: 20_000 }))).toBe(true);
  });
});

describe('self-contained qcow2 and vmdk images still work', () => {
  it.each([
    ['qcow2', ['-O', 'qcow2']],
    ['vmdk (monolithicSparse)', ['-O', 'vmdk']],
    ['vmdk (streamOptimized)', ['-O', 'vmdk', '-o', 'subformat=streamOptimized']],
  ])('%s: verify accepts it, manifest equals the raw image\'s, diff finds no difference', async (name, opts) => {
    const c = await newCase(name.replace(/\W+/g, '-'));
    const img = join(c.dir, `image.${name.slice(0, 5).trim()}`);
    await execa('qemu-img', ['convert', '-q', '-f', 'raw', ...opts, good, img]);
    await c.watch(img);
    const v = await c.run(VERIFY(img));
    expect(v.exitCode, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toMatch(/ACCEPTED/);
    const [m, raw, d] = await Promise.all([c.run(['manifest', img]), c.run(['manifest', good]), c.run(['diff', good, img])]);
    expect(m.exitCode, m.stderr).toBe(0);
    expect(m.stdout).toBe(raw.stdout);
    expect(d.exitCode, d.stdout + d.stderr).toBe(0);
    await c.checkHost();
  });
});

describe('e2fsck runs with a fixed locale', () => {
  it('a translated e2fsck (a stand-in on PATH that speaks German unless LC_ALL=C) still passes a clean image', async () => {
    const c = await newCase('locale');
    const bin = join(c.dir, 'bin');
    await mkdir(bin);
    const real = (await execa('sh', ['-c', 'command -v e2fsck'])).stdout.trim();
    // German words are not in HARMLESS: if they reached the parser, the check would fail.
    await writeFile(join(bin, 'e2fsck'), `#!/bin/sh\nif [ "$LC_ALL" != C ]; then echo "Durchgang 1: Inodes, Blöcke und Größen werden geprüft"; exit 0; fi\nexec ${real} "$@"\n`, { mode: 0o755 });
    const img = await copyGood(c);
    const v = await runCli(VERIFY(img), { env: { TMPDIR: c.tmp, PATH: `${bin}:${process.env.PATH}`, LC_ALL: 'de_DE.UTF-8', LANG: 'de_DE.UTF-8' } });
    expect(v.exitCode, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toMatch(/PASS {2}fsck/);
    // And the stand-in does fail the check when it is given the German locale: the test would see a leak.
    const leak = await execa(join(bin, 'e2fsck'), ['-fn', img], { env: { LC_ALL: 'de_DE.UTF-8' }, reject: false });
    expect(leak.stdout).toMatch(/Durchgang/);
  });
});

it('with readback skipped, the diff stage reports the unreadable image itself (a finding, not a crash)', async () => {
  const c = await newCase('skip-readback');
  const img = await copyGood(c);
  await debugfsWrite(img, 'clri /srv/owned');
  const json = join(c.dir, 'r.json');
  const v = await c.run([...VERIFY(img), '--skip', 'readback', '--report-json', json]);
  expect(v.exitCode, v.stdout + v.stderr).toBe(1);
  const stages = JSON.parse(await readFile(json, 'utf8')).stages as { name: string; status: string; findings: { code: string; message: string }[] }[];
  const diff = stages.find((s) => s.name === 'diff')!;
  expect(diff.status).toBe('failed');
  expect(diff.findings).toEqual([expect.objectContaining({ code: 'unreadable', message: expect.stringMatching(/cannot read inode \d+ \(\/srv\/owned\)/) })]);
});
