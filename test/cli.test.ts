// The CLI contract: usage errors exit 2 with a hint; every command has help with examples.
// main() runs in-process (runCli); the bin, its signal handlers and its exit code in a child.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, runCli, runCliProcess } from './helpers/cli.js';
import { COMMANDS } from '../src/commands/index.js';
import { HANDLED_SIGNALS } from '../src/cleanup.js';
import { log } from '../src/log.js';

describe('cli', () => {
  it('prints the command list and exits 2 without a command', async () => {
    const r = await runCli([]);
    expect(r.exitCode).toBe(2);
    for (const c of COMMANDS) expect(r.stdout).toContain(`  ${c.name} `);
    expect(r.stdout).toMatch(/Exit codes: 0 accepted/);
  });

  it('has --help with examples for every command', async () => {
    for (const c of COMMANDS) {
      const r = await runCli([c.name, '--help']);
      expect(r.exitCode, c.name).toBe(0);
      expect(r.stdout, c.name).toContain(`part-image ${c.name}`);
      expect(r.stdout, c.name).toMatch(/Examples?:/);
    }
  });

  it.each([
    [['frobnicate'], /unknown command "frobnicate"/],
    [['build', '--output', 'x.img'], /build needs --input PATH/],
    [['build', '--input', '.', '--output', 'x.img', '--seed', 'nope'], /--seed must be a UUID/],
    [['build', '--input', '.', '--output', 'x.img', '--skip', 'warp'], /--skip: unknown stage "warp"/],
    [['build', '--input', '.', '--output', 'x.img', '--format', 'iso'], /unknown output format "iso"/],
    [['build', '--input', '/nonexistent/tree', '--output', 'x.img'], /input not found: \/nonexistent\/tree/],
    [['build', '--input', '.', '--output', '/nonexistent/dir/x.img'], /folder of --output does not exist/],
    [['verify'], /expected 1 argument/],
    [['verify', '/nonexistent.img', '--input', '.'], /image not found/],
    [['verify', 'x.img'], /verify needs --input PATH/],
    [['build', '--input', '.', '--output', 'x.img', '--report-json', '/nonexistent/dir/r.json'], /--report-json \/nonexistent\/dir\/r.json: its folder does not exist/],
    [['build', '--input', '.', '--output', './inside.img'], /is inside the input tree/],
    [['build', '--input', '.', '--output', 'x.img', '--golden-allow', 'a.json'], /--golden-allow needs --golden FILE/],
    [['build', '--bogus'], /build: unknown option --bogus/],
    // Typos get a suggestion.
    [['bulid'], /unknown command "bulid"; did you mean build\?/],
    [['build', '--inptu', '.', '--output', 'x.img'], /build: unknown option --inptu; did you mean --input\?/],
    [['build', '--input', '.', '--output', 'x.img', '--skip', 'nspwn'], /--skip: unknown stage "nspwn"; did you mean nspawn\?/],
    [['manifest', '.', '--formt', 'json'], /did you mean --format\?/],
    // Contradictions and a flag given twice with different values: exit 2.
    [['-q', '-v', 'doctor'], /doctor: --quiet and --verbose contradict each other/],
    [['doctor', '-q', '--verbose'], /doctor: --quiet and --verbose contradict each other/],
    [['manifest', '.', '--json', '--format', 'mtree'], /manifest: --json and --format mtree contradict each other/],
    [['diff', 'a', 'b', '--json', '--format', 'text'], /diff: --json and --format text contradict each other/],
    [['build', '--input', '.', '--output', 'x.img', '--format', 'raw', '--format', 'qcow2'], /--format given twice with different values: "raw" and "qcow2"/],
    [['manifest', '.', '--format', 'mtree', '-K', 'xattr', '--no-xattrs'], /--no-xattrs and the keyword xattr contradict each other/],
    [['manifest', '.', '-K', 'device'], /--add-keywords applies to --format mtree only/],
    // Values: a negative size is range-checked, never "ambiguous"; units as systemd-repart takes them.
    [['build', '--input', '.', '--output', 'x.img', '--size-mb', '-5'], /--size-mb must be a whole number of MiB, got -5; valid: 2 to/],
    [['build', '--input', '.', '--output', 'x.img', '--size-mb', '1.3G'], /--size-mb 1.3G is not a whole number of MiB \(1331.2 MiB\)/],
    [['build', '--input', '.', '--output', 'x.img', '--free-mb', '20T'], /--free-mb must be a whole number of MiB, got 20971520; valid: 0 to 16777215/],
    [['build', '--input', '.', '--output'], /build: --output needs a value/],
    [['build', '--output', '--format', 'qcow2'], /--output needs a value, but the next argument is the option --format/],
    [['doctor', '--json=yes'], /--json takes no value/],
    [['--input', 'x', 'build'], /--input is not a global option/],
    [['--verbos', 'doctor'], /--verbos is not a global option; only .* may come before the command; did you mean --verbose\?/],
    [['build', '--input', '.', '--output', 'x.img', '--check-reproducible'], /cannot be reproducible without --seed UUID/],
  ])('exits 2 with a hint for %j', async (args, message) => {
    const r = await runCli(args);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/^hint: /m);
  });

  it('rejects a malformed SIZE_MB from the environment', async () => {
    const out = join(tmpdir(), `pi-never-${process.pid}.img`);
    const r = await runCli(['build', '--input', 'test/fixtures', '--output', out], { env: { SIZE_MB: 'lots' } });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/SIZE_MB must be a whole number of MiB, got "lots"/);
    // A usage error stops before anything is built.
    expect(existsSync(out)).toBe(false);
  });

  it('rejects a bad PART_IMAGE_NSPAWN before any work, exit 2', async () => {
    const r = await runCli(['boot', 'nothing.img'], { env: { PART_IMAGE_NSPAWN: 'cloud' } });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/PART_IMAGE_NSPAWN must be 'host' or 'vm' \(or unset\), not 'cloud'/);
  });

  it('takes global options before the command', async () => {
    const help = await runCli(['--verbose', 'doctor', '--help']);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toMatch(/^Usage: part-image doctor/m);
    const h = await runCli(['-q', '--help']);
    expect(h.exitCode).toBe(0);
    expect(h.stdout).toMatch(/-q, --quiet +no progress and no summary/);
    const v = await runCli(['-q', '--version']);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('prints its version', async () => {
    const r = await runCli(['--version']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('installs no signal handler and runs nothing when cli.ts is imported', async () => {
    const before = HANDLED_SIGNALS.map((sig) => process.listenerCount(sig));
    const cli = await import('../src/cli.js');
    expect(typeof cli.main).toBe('function');
    expect(HANDLED_SIGNALS.map((sig) => process.listenerCount(sig))).toEqual(before);
  });

  it('restores the log level, cwd, env and exit code after an in-process run', async () => {
    const cwd = process.cwd();
    process.env.PART_IMAGE_CLI_TEST_VAR = 'kept';
    const r = await runCli(['build', '--verbose', '--output', 'x.img'], { cwd: tmpdir(), env: { PART_IMAGE_CLI_TEST_VAR: undefined, SIZE_MB: 'lots' } });
    expect(r.exitCode).toBe(2);
    expect(log.verbosity).toBe('normal');
    expect(process.cwd()).toBe(cwd);
    expect(process.env.PART_IMAGE_CLI_TEST_VAR).toBe('kept');
    expect(process.env.SIZE_MB).toBeUndefined();
    expect(process.exitCode).toBeUndefined();
    delete process.env.PART_IMAGE_CLI_TEST_VAR;
  });

  it('gives the same output in-process and from the bin, and the bin is an executable node script', async () => {
    for (const args of [['--version'], ['frobnicate'], ['doctor', '--help']]) {
      const [inside, child] = [await runCli(args), await runCliProcess(args)];
      expect(child, args.join(' ')).toEqual(inside);
    }
    expect(readFileSync(CLI, 'utf8').split('\n')[0]).toBe('#!/usr/bin/env node');
    expect(statSync(CLI).mode & 0o111).toBe(0o111);
  });
  it('the bin exits only once a slow pipe took all of stdout, and a reader that leaves early is not an error', async () => {
    // process.exit() used to cut a piped manifest short: 1,172 of 3,003 lines reached `wc -l`.
    const dir = mkdtempSync(join(tmpdir(), 'part-image-pipe-'));
    try {
      mkdirSync(join(dir, 't'));
      for (let i = 0; i < 3000; i++) writeFileSync(join(dir, 't', `file-with-a-long-name-${i}`), `${i}\n`);
      const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
      const all = execFileSync('sh', ['-c', `node ${q(CLI)} manifest ${q(join(dir, 't'))} --no-hash -q | (sleep 0.5; wc -l)`], { encoding: 'utf8' });
      expect(Number(all.trim())).toBe(3003);
      const rc = spawnSync('bash', ['-c', `node ${q(CLI)} manifest ${q(join(dir, 't'))} --no-hash -q | head -c 10 > /dev/null; echo "\${PIPESTATUS[0]}"`], { encoding: 'utf8' });
      expect(rc.stdout.trim()).toBe('0');
      expect(rc.stderr).not.toMatch(/EPIPE|Unhandled/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
