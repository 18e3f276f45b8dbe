// The core pipeline end to end, with the real tools: build, verify, reject, accept.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { makeSampleTree } from './helpers/trees.js';
import { blocksOf, debugfsWrite, overwriteBlock } from './helpers/images.js';
import { skipBoot } from './helpers/stages.js';

let work: string;
let tree: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-build-test-'));
  tree = join(work, 'tree');
  await makeSampleTree(tree);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function readReport(path: string) {
  return JSON.parse(await readFile(path, 'utf8'));
}

describe('build from a directory', () => {
  it('accepts the sample tree with zero findings, with fsck, readback, diff and free space in the report', async () => {
    const out = join(work, 'dir.img');
    const r = await runCli(['build', ...skipBoot(), '--input', tree, '--output', out, '--free-mb', '16', '--report-json', join(work, 'dir.json'), '--junit', join(work, 'dir.xml')]);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/ACCEPTED/);
    const report = await readReport(join(work, 'dir.json'));
    expect(report.accepted).toBe(true);
    const names = report.stages.map((s: { name: string }) => s.name);
    expect(names).toEqual(expect.arrayContaining(['read', 'build', 'fsck', 'readback', 'diff', 'freespace']));
    for (const s of report.stages) expect(s.findings).toEqual([]);
    const free = report.stages.find((s: { name: string }) => s.name === 'freespace');
    expect(free.details.freeMb).toBeGreaterThanOrEqual(16);
    expect(free.details.freeMb).toBeLessThan(16 + 8);
    expect(await readFile(join(work, 'dir.xml'), 'utf8')).toMatch(/<testcase classname="part-image\.\d+-diff" name="diff"/);
    // The capability and the device numbers really are in the image.
    const cap = await execa('debugfs', ['-R', 'ea_get -x /usr/bin/pinglike security.capability', out]);
    expect(cap.stdout.replace(/\s/g, '')).toContain('0100000200200000');
    const dev = await execa('debugfs', ['-R', 'stat /dev/loop9', out]);
    expect(dev.stdout).toMatch(/Device major\/minor number: 07:09/);
    expect(existsSync(`${out}.rejected`)).toBe(false);
    expect((await readdir(work)).filter((f) => f.includes('.part-image-'))).toEqual([]);
  });

  it('honours SIZE_MB exactly, and says how many MiB a tree needs when it does not fit', async () => {
    const out = join(work, 'exact.img');
    const ok = await runCli(['build', ...skipBoot(), '--input', tree, '--output', out], { env: { SIZE_MB: '40' } });
    expect(ok.exitCode).toBe(0);
    expect((await stat(out)).size).toBe(40 * 1024 * 1024);
    const big = join(work, 'big');
    await execa('mkdir', ['-p', big]);
    await execa('dd', ['if=/dev/urandom', `of=${join(big, 'blob')}`, 'bs=1M', 'count=12', 'status=none']);
    const small = await runCli(['build', ...skipBoot(), '--input', big, '--output', join(work, 'small.img'), '--size-mb', '8']);
    expect(small.exitCode).toBe(2);
    expect(small.stderr).toMatch(/does not fit: the image is 8 MiB but needs at least \d+ MiB/);
    expect(small.stderr).toMatch(/hint: Raise --size-mb/);
    expect(existsSync(join(work, 'small.img'))).toBe(false);
  });
});

describe('verify rejects damaged images', () => {
  let good: string;
  beforeAll(async () => {
    good = join(work, 'good.img');
    const r = await runCli(['build', ...skipBoot(), '--input', tree, '--output', good, '--free-mb', '8']);
    expect(r.exitCode).toBe(0);
  });

  async function damaged(name: string, damage: (img: string) => Promise<void>) {
    const img = join(work, `${name}.img`);
    await execa('cp', ['--sparse=always', good, img]);
    await damage(img);
    const json = join(work, `${name}.json`);
    const r = await runCli(['verify', ...skipBoot(), img, '--input', tree, '--report-json', json]);
    return { r, report: await readReport(json) };
  }

  it('passes the untouched image', async () => {
    const r = await runCli(['verify', ...skipBoot(), good, '--input', tree]);
    expect(r.exitCode).toBe(0);
  });

  it('fsck: a corrupted metadata block', async () => {
    const { r, report } = await damaged('corrupt', async (img) => {
      const [block] = await blocksOf(img, '/srv');
      await overwriteBlock(img, block, Buffer.alloc(4096, 0xa5));
    });
    expect(r.exitCode).toBe(1);
    const fsck = report.stages.find((s: { name: string }) => s.name === 'fsck');
    expect(fsck.status).toBe('failed');
    expect(fsck.findings.map((f: { message: string }) => f.message).join('\n')).toMatch(/directory corrupted|Directory inode/);
  });

  it('diff: a mode bit flipped with debugfs sif', async () => {
    const { r, report } = await damaged('mode', (img) => debugfsWrite(img, 'sif /usr/bin/tool mode 0100755'));
    expect(r.exitCode).toBe(1);
    const diff = report.stages.find((s: { name: string }) => s.name === 'diff');
    expect(diff.findings).toContainEqual(expect.objectContaining({ code: 'mode', path: '/usr/bin/tool', expected: '4755', actual: '0755' }));
  });

  it('diff: an xattr removed with ea_rm', async () => {
    const { r, report } = await damaged('xattr', (img) => debugfsWrite(img, 'ea_rm /usr/bin/pinglike security.capability'));
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toMatch(/xattr security\.capability differs/);
    const diff = report.stages.find((s: { name: string }) => s.name === 'diff');
    expect(diff.findings).toContainEqual(expect.objectContaining({ code: 'xattr', path: '/usr/bin/pinglike', field: 'security.capability' }));
  });

  it('diff: a file content changed in place', async () => {
    const { r, report } = await damaged('content', async (img) => {
      const [block] = await blocksOf(img, '/srv/big.bin');
      await overwriteBlock(img, block, Buffer.from('tampered'));
    });
    expect(r.exitCode).toBe(1);
    const diff = report.stages.find((s: { name: string }) => s.name === 'diff');
    expect(diff.findings).toContainEqual(expect.objectContaining({ code: 'content', path: '/srv/big.bin', field: 'sha256' }));
  });

  it('diff: a wrong owner and a broken hardlink', async () => {
    const { report } = await damaged('owner', async (img) => {
      await debugfsWrite(img, 'sif /srv/owned uid 0');
      await debugfsWrite(img, 'unlink /srv/hard-b');
      await debugfsWrite(img, 'sif /srv/hard-a links_count 1');
    });
    const diff = report.stages.find((s: { name: string }) => s.name === 'diff');
    expect(diff.findings).toContainEqual(expect.objectContaining({ code: 'uid', path: '/srv/owned', expected: 1000, actual: 0 }));
    expect(diff.findings).toContainEqual(expect.objectContaining({ code: 'missing', path: '/srv/hard-b' }));
    expect(diff.findings).toContainEqual(expect.objectContaining({ code: 'hardlink', path: '/srv/hard-a' }));
  });
});

describe('acceptance is atomic', () => {
  it('on rejection leaves the output path exactly as it was and keeps FILE.rejected', async () => {
    const out = join(work, 'keep.img');
    await writeFile(out, 'previous release');
    // A fake e2fsck on PATH that finds an error: the failure path, without
    // having to damage an image between build and verify.
    const bin = join(work, 'fakebin');
    await execa('mkdir', ['-p', bin]);
    await writeFile(join(bin, 'e2fsck'), '#!/bin/sh\necho "Inode 12 has illegal blocks."\necho "Fix? no"\nexit 4\n', { mode: 0o755 });
    const r = await runCli(['build', ...skipBoot(), '--input', tree, '--output', out, '--free-mb', '4'], { env: { PATH: `${bin}:${process.env.PATH}` } });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toMatch(/FAIL {2}fsck/);
    expect(r.stdout).toContain('[fsck] Inode 12 has illegal blocks.');
    expect(r.stdout).toMatch(/REJECTED/);
    expect(await readFile(out, 'utf8')).toBe('previous release');
    expect(existsSync(`${out}.rejected`)).toBe(true);
    expect((await readdir(work)).filter((f) => f.includes('.part-image-'))).toEqual([]);
  });

  it('reports a missing tool with the package to install, exit 3', async () => {
    const bin = join(work, 'nobin');
    await execa('mkdir', ['-p', bin]);
    await execa('ln', ['-sf', process.execPath, join(bin, 'node')]);
    const r = await runCli(['build', ...skipBoot(), '--input', tree, '--output', join(work, 'x.img')], { env: { PATH: bin } });
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toMatch(/tool missing: (mke2fs|getfattr)/);
    expect(r.stderr).toMatch(/apt-get install (e2fsprogs|attr)/);
  });
});

describe('inputs the builder must handle or refuse clearly', () => {
  it('keeps an input /lost+found (a tree copied from an ext4 root), and refuses a newline in a name with exit 2', async () => {
    const t = join(work, 'lf-tree');
    await execa('mkdir', ['-p', join(t, 'lost+found'), join(t, 'etc')]);
    await execa('chmod', ['0700', join(t, 'lost+found')]);
    await writeFile(join(t, 'etc/x'), 'x\n');
    const ok = await runCli(['build', ...skipBoot(), '--input', t, '--output', join(work, 'lf.img'), '--free-mb', '4']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    await writeFile(join(t, 'bad\nname'), 'x');
    const bad = await runCli(['build', ...skipBoot(), '--input', t, '--output', join(work, 'nl.img'), '--free-mb', '4']);
    expect(bad.exitCode).toBe(2);
    // Refused by the read stage's limits check (input/limits.ts), before any image is made.
    expect(bad.stderr).toContain('bad\\nname": a newline or carriage return in its name');
    expect(bad.stderr).toMatch(/^hint: Fix these entries in the input/m);
  });

  it('writes the JSON report even when a step stops the run (a tree too big for SIZE_MB)', async () => {
    const json = join(work, 'toobig.json');
    const big = join(work, 'toobig-tree');
    await execa('mkdir', ['-p', big]);
    await execa('dd', ['if=/dev/urandom', `of=${join(big, 'blob')}`, 'bs=1M', 'count=6', 'status=none']);
    const r = await runCli(['build', ...skipBoot(), '--input', big, '--output', join(work, 'toobig.img'), '--size-mb', '4', '--report-json', json]);
    expect(r.exitCode).toBe(2);
    const report = await readReport(json);
    expect(report.accepted).toBe(false);
    // The read stage refuses it already: its apparent size is over SIZE_MB.
    const read = report.stages.find((s: { name: string }) => s.name === 'read');
    expect(read.status).toBe('failed');
    expect(read.findings[0].message).toMatch(/does not fit/);
  });
});

describe('a rejected build names its cause first', () => {
  it('puts the boot diagnosis first for a tree that cannot boot, in the text and the JSON report', async () => {
    const t = join(work, 'noboot');
    await execa('mkdir', ['-p', join(t, 'srv')]);
    await writeFile(join(t, 'srv/data'), 'data\n');
    const json = join(work, 'noboot.json');
    // A tree of only /srv/data is a data partition now (issue 9): --role root asks for the boot checks.
    const r = await runCli(['build', '--input', t, '--output', join(work, 'noboot.img'), '--free-mb', '4', '--role', 'root', '--report-json', json]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout.split('\n')[0]).toMatch(/^cause: no os-release: /);
    expect((await readReport(json)).cause).toMatch(/^no os-release/);
    expect(r.stdout).toContain('--skip diagnose,nspawn for an image that is never booted');
  });
});

describe('--verbose', () => {
  it('prints the build\'s repeated `sync IMAGE` once, saying that it repeats, and every other command', async () => {
    // Big enough that debugfs runs for several syncs.
    const big = join(work, 'verbose-tree');
    await execa('sh', ['-ec', 'mkdir -p "$1/d" && cd "$1/d" && seq 1 3000 | xargs touch && head -c 40000000 /dev/urandom > "$1/blob"', 'sh', big]);
    const r = await runCli(['--verbose', 'build', ...skipBoot(), '--input', big, '--output', join(work, 'verbose.img')]);
    expect(r.exitCode, r.stderr).toBe(0);
    const all = `${r.stdout}\n${r.stderr}`.split('\n');
    const syncs = all.filter((l) => /^\+ sync -- /.test(l));
    expect(syncs).toHaveLength(1);
    expect(syncs[0]).toMatch(/verbose\.img\.part-image-.*\.tmp {2}# again \d+ ms after each one ends, until debugfs exits$/);
    expect(all.filter((l) => /^\+ .*mke2fs /.test(l)).length).toBeGreaterThan(0);
    expect(all.filter((l) => /^\+ .*debugfs .*-w -f -/.test(l))).toHaveLength(1);
  });
});
