// What the CLI prints while it works and when it ends quietly: each stage's
// line on stderr as it finishes (plain without a TTY, coloured on one unless
// NO_COLOR), and --quiet keeping the one-line cause of a rejection.
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, runCli } from './helpers/cli.js';
import { skipAllBut } from './helpers/stages.js';
import { closest, parseOptions } from '../src/commands/args.js';
import { sizeFlagMb } from '../src/commands/common.js';

const STAGES = skipAllBut('fsck', 'readback', 'diff');
let work: string;
let tree: string;
let other: string;
let image: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-cli-output-'));
  tree = join(work, 'tree');
  await mkdir(join(tree, 'etc'), { recursive: true });
  await writeFile(join(tree, 'etc/os-release'), 'ID=out\n');
  other = join(work, 'other');
  await mkdir(join(other, 'etc'), { recursive: true });
  await writeFile(join(other, 'etc/os-release'), 'ID=out\n');
  await chmod(join(other, 'etc/os-release'), 0o600);
  image = join(work, 'a.img');
  const r = await runCli(['build', '-q', '--input', tree, '--output', image, '--free-mb', '4', ...STAGES]);
  expect(r.exitCode, r.stderr).toBe(0);
  expect(r.stdout + r.stderr).toBe('');
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('parser pieces (pure)', () => {
  it('suggests the nearest name, transpositions counting one', () => {
    expect(closest('bulid', ['build', 'verify', 'boot'])).toBe('build');
    expect(closest('inptu', ['input', 'output'])).toBe('input');
    expect(closest('nspwn', ['nspawn', 'portable'])).toBe('nspawn');
    expect(closest('zzzzzz', ['build', 'verify'])).toBeUndefined();
  });
  it('collects multiple flags, refuses a single one given twice with different values, accepts it twice the same', () => {
    const o = { skip: { type: 'string' as const, multiple: true }, format: { type: 'string' as const }, quiet: { type: 'boolean' as const, short: 'q' } };
    expect(parseOptions('t', ['--skip', 'a', '--skip=b', '--format', 'raw', '--format=raw', '-q'], o).values).toEqual({ skip: ['a', 'b'], format: 'raw', quiet: true });
    expect(() => parseOptions('t', ['--format', 'raw', '--format', 'qcow2'], o)).toThrow(/given twice with different values/);
  });
  it('takes sizes with units as systemd-repart does (base 1024)', () => {
    expect(sizeFlagMb('--size-mb', '512M')).toBe('512');
    expect(sizeFlagMb('--size-mb', '2G')).toBe('2048');
    expect(sizeFlagMb('--size-mb', '1.5g')).toBe('1536');
    expect(sizeFlagMb('--size-mb', '65536K')).toBe('64');
    expect(sizeFlagMb('--size-mb', '64')).toBe('64');
    expect(sizeFlagMb('--size-mb', '-5')).toBe('-5');
    expect(() => sizeFlagMb('--size-mb', '100K')).toThrow(/not a whole number of MiB/);
  });
});

describe('--quiet keeps the cause', () => {
  it('verify -q on a rejected image prints one line on stderr saying why, nothing on stdout', async () => {
    const r = await runCli(['verify', '-q', image, '--input', other, ...STAGES]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^part-image: rejected: .*a\.img: .*\/etc\/os-release: mode differs: expected 0600, got 0644/);
  });
  it('diff -q prints no listing, only the summary line on stderr when the sides differ', async () => {
    const r = await runCli(['diff', '-q', image, other]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^part-image: .*a\.img and .*other differ: 1 path differs: 1 changed \(mode 1\)$/);
    const same = await runCli(['diff', '-q', tree, tree]);
    expect(same.exitCode).toBe(0);
    expect(same.stdout + same.stderr).toBe('');
  });
});

describe('live progress', () => {
  it('without a TTY: one plain line per stage, in pipeline order, as each finishes; the summary on stdout', async () => {
    const r = await runCli(['verify', image, '--input', other, ...STAGES]);
    expect(r.exitCode).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => /^(PASS|FAIL|SKIP|ERROR)/.test(l));
    expect(lines.slice(0, 4)).toEqual([
      expect.stringMatching(/^PASS  read \(\d+ ms\)$/), expect.stringMatching(/^PASS  fsck /),
      expect.stringMatching(/^PASS  readback /), expect.stringMatching(/^FAIL  diff \(\d+ ms\)  1 finding$/),
    ]);
    expect(r.stderr).not.toMatch(/\x1b|\r/);
    expect(r.stdout).toMatch(/REJECTED/);
  });
  it('manifest and diff say what they read, with its size and time', async () => {
    const r = await runCli(['diff', image, other]);
    expect(r.stderr).toMatch(/^read A .*a\.img: image, \d+ entries \(\d+\.\d s\)$/m);
    expect(r.stderr).toMatch(/^read B .*other: dir, 3 entries \(\d+\.\d s\)$/m);
  });
  it('on a TTY: colour unless NO_COLOR', async () => {
    const cmd = `node ${CLI} verify ${image} --input ${other} ${STAGES.join(' ')} 2>&1 >/dev/null`;
    const tty = await execa('script', ['-qec', cmd, '/dev/null'], { reject: false });
    expect(tty.stdout).toMatch(/\x1b\[32mPASS \x1b\[0m fsck/);
    expect(tty.stdout).toMatch(/\x1b\[31mFAIL \x1b\[0m diff/);
    const plain = await execa('script', ['-qec', cmd, '/dev/null'], { reject: false, env: { ...process.env, NO_COLOR: '1' } });
    expect(plain.stdout).toMatch(/^FAIL  diff/m);
    expect(plain.stdout).not.toMatch(/\x1b\[3\dm/);
  });
});
