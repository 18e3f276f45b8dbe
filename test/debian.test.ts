// A real Debian bookworm root (mmdebstrap, cached by recipe) through the whole
// core pipeline, and the interrupted-run guarantee on the same input.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, runCli } from './helpers/cli.js';
import { debianRootTar } from './helpers/debian-root.js';
import { debugfsWrite, loopDevices } from './helpers/images.js';
import { skipBoot } from './helpers/stages.js';

let work: string;
let rootTar: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-debian-test-'));
  rootTar = await debianRootTar();
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('a real Debian root', () => {
  it('builds from the mmdebstrap tar and verifies with zero findings; verify rejects it once an xattr is gone', async () => {
    const out = join(work, 'part.img');
    const json = join(work, 'report.json');
    const r = await runCli(['build', '--input', rootTar, '--output', out, ...skipBoot(), '--report-json', json]);
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    const report = JSON.parse(await readFile(json, 'utf8'));
    const byName = Object.fromEntries(report.stages.map((s: { name: string }) => [s.name, s]));
    for (const name of ['fsck', 'readback', 'diff', 'freespace']) expect(byName[name].status).toBe('passed');
    expect(byName.readback.details.entries).toBeGreaterThan(9000);
    expect(byName.freespace.details.freeMb).toBeGreaterThanOrEqual(512);
    // The capability that the upstream builder silently drops.
    const cap = await execa('debugfs', ['-R', 'ea_get -x /usr/bin/ping security.capability', out]);
    expect(cap.stdout.replace(/\s/g, '')).toContain('security.capability(20)=0100000200200000');

    await debugfsWrite(out, 'ea_rm /usr/bin/ping security.capability');
    const v = await runCli(['verify', out, '--input', rootTar, ...skipBoot()]);
    expect(v.exitCode).toBe(1);
    expect(v.stdout).toContain('/usr/bin/ping: xattr security.capability differs');
  });

  it('releases everything when interrupted: exit 130, no temp image, no temp dir, no loop device', async () => {
    const tmp = join(work, 'tmp');
    await execa('mkdir', ['-p', tmp]);
    const out = join(work, 'int.img');
    const before = await loopDevices();
    const child = execa('node', [CLI, 'build', '--input', rootTar, '--output', out], { reject: false, env: { TMPDIR: tmp } });
    await new Promise((r) => setTimeout(r, 2500));
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode).toBe(130);
    expect(String(r.stderr)).toMatch(/SIGTERM: cleaning up/);
    expect(existsSync(out)).toBe(false);
    expect((await readdir(work)).filter((f) => f.includes('.part-image-'))).toEqual([]);
    expect(await readdir(tmp)).toEqual([]);
    expect(await loopDevices()).toBe(before);
  });
});
