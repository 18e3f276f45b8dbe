// Output formats with the real tools: the raw image is verified, then
// converted with qemu-img and checked against the raw with `qemu-img compare`
// before the converted file may reach the output path.
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipBoot } from './helpers/stages.js';
import { runCli } from './helpers/cli.js';
import { makeSampleTree } from './helpers/trees.js';
import { sniffFile } from '../src/source/load.js';

// The boot stages need an init in the tree; these tests are about formats.
const SKIP = skipBoot();

let work: string;
let tree: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-formats-test-'));
  tree = join(work, 'tree');
  await makeSampleTree(tree);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function info(image: string): Promise<{ format: string; 'virtual-size': number }> {
  return JSON.parse((await execa('qemu-img', ['info', '--output=json', image])).stdout);
}

async function build(out: string, extra: string[], env: Record<string, string> = {}) {
  const json = `${out}.json`;
  const r = await runCli(['build', '--input', tree, '--output', out, '--free-mb', '8', ...SKIP, '--report-json', json, ...extra], { env });
  const report = existsSync(json) ? JSON.parse(await readFile(json, 'utf8')) : undefined;
  return { ...r, report };
}

function sizeMbOf(report: { stages: { name: string; details?: { sizeMb?: number } }[] }): number {
  return report.stages.find((s) => s.name === 'build')!.details!.sizeMb!;
}

describe.each(['qcow2', 'vmdk'] as const)('--format %s', (format) => {
  const out = () => join(work, `sample.${format}`);

  it('writes a real image of that format, with the raw image\'s virtual size, checked by qemu-img compare', async () => {
    const r = await build(out(), ['--format', format]);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.exitCode).toBe(0);
    const convert = r.report.stages.find((s: { name: string }) => s.name === 'convert');
    expect(convert).toMatchObject({ status: 'passed', findings: [] });
    expect(convert.details.summary).toMatch(/qemu-img compare/);
    const i = await info(out());
    expect(i.format).toBe(format);
    expect(i['virtual-size']).toBe(sizeMbOf(r.report) * 1024 * 1024);
    expect(await sniffFile(out())).toBe(format);
    // No raw leftovers beside the output.
    expect((await readdir(work)).filter((f) => f.includes('.part-image-'))).toEqual([]);
  });

  it('passes `part-image verify` against its input (read through a raw copy)', async () => {
    const r = await runCli(['verify', out(), '--input', tree, ...SKIP]);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/PASS {2}diff/);
    expect(r.stdout).toMatch(/ACCEPTED/);
  });
});

describe('format selection', () => {
  it('takes OUTPUT_FORMAT from the environment, and --format wins over it', async () => {
    const a = join(work, 'env.img');
    const r = await build(a, [], { OUTPUT_FORMAT: 'qcow2' });
    expect(r.exitCode).toBe(0);
    expect((await info(a)).format).toBe('qcow2');
    const b = join(work, 'flag.img');
    const f = await build(b, ['--format', 'vmdk'], { OUTPUT_FORMAT: 'qcow2' });
    expect(f.exitCode).toBe(0);
    expect((await info(b)).format).toBe('vmdk');
  });

  it('reads an empty OUTPUT_FORMAT as raw, as the seed builder does', async () => {
    const a = join(work, 'empty-env.img');
    const r = await build(a, [], { OUTPUT_FORMAT: '' });
    expect(r.exitCode).toBe(0);
    expect(await sniffFile(a)).toBe('image');
  });

  it('gives a qcow2 whose guest view is byte-identical to the raw build of the same tree (same seed and epoch)', async () => {
    const seed = ['--seed', '6e0c5a2a-0f3c-4e7b-9a3e-1d2c3b4a5f60'];
    const env = { SOURCE_DATE_EPOCH: '1700000000' };
    const raw = join(work, 'same.raw');
    const q = join(work, 'same.qcow2');
    expect((await build(raw, seed, env)).exitCode).toBe(0);
    expect((await build(q, [...seed, '--format', 'qcow2'], env)).exitCode).toBe(0);
    const cmp = await execa('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', raw, q], { reject: false });
    expect(cmp.stdout).toMatch(/Images are identical/);
    expect(cmp.exitCode).toBe(0);
  });

  it.each([
    ['--format', ['--format', 'iso'], {}],
    ['OUTPUT_FORMAT', [], { OUTPUT_FORMAT: 'dmg' }],
  ])('refuses an unknown format from %s with exit 2 and the list, writing nothing', async (_from, extra, env) => {
    const out = join(work, `unknown-${_from}.img`);
    const r = await build(out, extra as string[], env as Record<string, string>);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/unknown output format "(iso|dmg)"/);
    expect(r.stderr).toMatch(/raw, qcow2, qcow, qed, vdi, vhdx, vmdk, vpc/);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.rejected`)).toBe(false);
  });
});

describe('a conversion that does not match the verified raw image', () => {
  it('is rejected (exit 1): the raw image is kept as FILE.rejected and nothing reaches FILE', async () => {
    // A qemu-img whose `compare` reports a mismatch, as a broken conversion would.
    const bin = join(work, 'fake-bin');
    await execa('mkdir', ['-p', bin]);
    const real = (await execa('sh', ['-c', 'command -v qemu-img'])).stdout.trim();
    await writeFile(join(bin, 'qemu-img'),
      `#!/bin/sh\nif [ "$1" = compare ]; then echo 'Content mismatch at offset 1048576!'; exit 1; fi\nexec ${real} "$@"\n`);
    await chmod(join(bin, 'qemu-img'), 0o755);
    const out = join(work, 'mismatch.qcow2');
    const r = await build(out, ['--format', 'qcow2'], { PATH: `${bin}:${process.env.PATH}` });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toMatch(/REJECTED/);
    expect(existsSync(out)).toBe(false);
    expect(await sniffFile(`${out}.rejected`)).toBe('image');
    expect(r.report.accepted).toBe(false);
    const convert = r.report.stages.find((s: { name: string }) => s.name === 'convert');
    expect(convert.status).toBe('failed');
    expect(convert.findings[0]).toMatchObject({ code: 'convert-mismatch' });
    expect(convert.findings[0].message).toMatch(/Content mismatch at offset 1048576/);
    expect((await stat(`${out}.rejected`)).size).toBe(sizeMbOf(r.report) * 1024 * 1024);
  });
});
