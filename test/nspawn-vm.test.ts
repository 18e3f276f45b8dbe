// The nspawn stage in the part-image VM (PART_IMAGE_NSPAWN=vm): systemd-nspawn
// --image= on the image as a virtio disk, the real udev path, judged like the
// host path. Two real VM boots (under TCG here, ~20-40 s each): the demo in
// exec mode and a Debian root booted with the probe. Nothing is skipped: a
// host without qemu, mmdebstrap or a Debian mirror fails these tests.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasTool } from '../src/exec.js';
import { ensureVmImage } from '../src/vm/image.js';
import { nspawnWhere } from '../src/stages/nspawn.js';
import { doctor } from '../src/doctor.js';
import type { Report, StageResult } from '../src/types.js';
import { runCliProcess as runCli } from './helpers/cli.js'; // VM runs: child processes, as before
import { debianRootTar } from './helpers/debian-root.js';

const VM_TEST_MS = 600_000;
const tmp = await mkdtemp(join(tmpdir(), 'part-image-nspawn-vm-'));
afterAll(() => rm(tmp, { recursive: true, force: true }));

let debianTar: string;

beforeAll(async () => {
  expect(await hasTool('qemu-system-x86_64'), 'these tests need qemu (apt-get install qemu-system-x86)').toBe(true);
  const t = Date.now();
  const image = await ensureVmImage();
  console.log(`VM image: ${image.built ? 'built' : 'cache hit'} in ${Date.now() - t} ms`);
  debianTar = await debianRootTar();
}, 1_800_000);

async function nspawnResult(reportFile: string): Promise<StageResult> {
  const report = JSON.parse(await readFile(reportFile, 'utf8')) as Report;
  const stage = report.stages.find((s) => s.name === 'nspawn');
  expect(stage, 'the report has an nspawn stage').toBeDefined();
  return stage!;
}

describe('where the nspawn stage runs', () => {
  it('follows PART_IMAGE_NSPAWN, and doctor says so', async () => {
    expect(await nspawnWhere({ PART_IMAGE_NSPAWN: 'vm' })).toEqual({ where: 'vm' });
    // This host (root, systemd-container) can run it: the default and "host" pick the host.
    expect(await nspawnWhere({})).toEqual({ where: 'host' });
    expect(await nspawnWhere({ PART_IMAGE_NSPAWN: 'host' })).toEqual({ where: 'host' });
    const bad = await nspawnWhere({ PART_IMAGE_NSPAWN: 'cloud' });
    expect(bad).toMatchObject({ unavailable: expect.stringMatching(/PART_IMAGE_NSPAWN must be 'host' or 'vm'.*'cloud'/) });

    const saved = process.env.PART_IMAGE_NSPAWN;
    process.env.PART_IMAGE_NSPAWN = 'vm';
    try {
      const r = await doctor({ probeKvm: false });
      expect(r.stages.find((s) => s.name === 'nspawn')).toMatchObject({ canRun: true, how: 'vm' });
    } finally {
      if (saved === undefined) delete process.env.PART_IMAGE_NSPAWN;
      else process.env.PART_IMAGE_NSPAWN = saved;
    }
  });

  it('reports a VM that cannot start as unavailable (exit 3), not as a finding', async () => {
    // A qemu that fails at once: the environment is broken, the image is not.
    const bin = join(tmp, 'broken-qemu');
    await mkdir(bin);
    await writeFile(join(bin, 'qemu-system-x86_64'), '#!/bin/sh\necho "qemu-system-x86_64: simulated failure to start" >&2\nexit 1\n');
    await chmod(join(bin, 'qemu-system-x86_64'), 0o755);
    const img = join(bin, 'demo_1.0.raw');
    const build = await runCli(['demo', '--output', img, '--skip', 'portable,nspawn'], { env: { PART_IMAGE_NSPAWN: 'vm' } });
    expect(build.exitCode, build.stderr).toBe(0);
    const report = join(tmp, 'broken.json');
    const t = Date.now();
    const r = await runCli(['boot', img, '--nspawn', '--nspawn-command', '/usr/bin/busybox true', '--report-json', report], {
      env: { PART_IMAGE_NSPAWN: 'vm', PART_IMAGE_ACCEL: 'tcg', PATH: `${bin}:${process.env.PATH}` },
    });
    console.log(`broken VM: ${Date.now() - t} ms`);
    expect(r.exitCode, r.stderr).toBe(3);
    const s = await nspawnResult(report);
    expect(s).toMatchObject({ status: 'skipped', skippedBy: 'unavailable', findings: [] });
    expect(s.reason).toMatch(/the part-image VM failed .*simulated failure to start/);
    expect(s.details?.where).toBe('vm');
  }, 120_000);
});

describe('nspawn stage in the VM (PART_IMAGE_NSPAWN=vm)', () => {
  it('runs the demo image in exec mode and passes', async () => {
    const out = join(tmp, 'demo_1.0.raw');
    const report = join(tmp, 'demo.json');
    const r = await runCli(['demo', '--output', out, '--skip', 'portable', '--report-json', report], { env: { PART_IMAGE_NSPAWN: 'vm' } });
    const s = await nspawnResult(report);
    console.log(`nspawn in the VM, demo (exec): stage ${s.durationMs} ms, VM ${JSON.stringify(s.details?.vm)}`);
    expect(r.exitCode, `${r.stderr}\n${JSON.stringify(s, null, 2)}`).toBe(0);
    expect(s.status).toBe('passed');
    expect(s.details).toMatchObject({ where: 'vm', mode: 'exec', exitCode: 0, timedOut: false });
    expect(s.details?.command).toEqual(['/usr/bin/busybox', 'sh', '-c', 'echo hello from systemd-nspawn']);
    expect(r.stdout).toMatch(/^ +PASS +nspawn .*-> exit 0 \(in the VM\)$/m);
  }, VM_TEST_MS);

  it('boots a Debian root with the probe to its default target and passes', async () => {
    const out = join(tmp, 'debian.img');
    const report = join(tmp, 'debian.json');
    const r = await runCli(['build', '--input', debianTar, '--output', out, '--skip', 'portable,diagnose', '--report-json', report], {
      env: { PART_IMAGE_NSPAWN: 'vm' },
    });
    const s = await nspawnResult(report);
    console.log(`nspawn in the VM, Debian (boot): stage ${s.durationMs} ms, VM ${JSON.stringify(s.details?.vm)}, run ${s.details?.runMs} ms`);
    expect(r.exitCode, `${r.stderr}\n${JSON.stringify(s, null, 2)}`).toBe(0);
    expect(s.status).toBe('passed');
    expect(s.findings).toEqual([]);
    expect(s.details).toMatchObject({
      where: 'vm',
      mode: 'boot',
      defaultTarget: 'graphical.target',
      defaultTargetState: 'active',
      timedOut: false,
    });
  }, VM_TEST_MS);
});
