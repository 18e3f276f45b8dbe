// The CLI contract: usage errors exit 2 with a hint; every command has help with examples.
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { COMMANDS } from '../src/commands/index.js';

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

  it('prints its version', async () => {
    const r = await runCli(['--version']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
