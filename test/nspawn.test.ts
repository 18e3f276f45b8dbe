// The nspawn stage on real images under real systemd-nspawn (root). A host
// without root or systemd-nspawn FAILS these tests: they must not pass by
// skipping.
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Scope } from '../src/cleanup.js';
import { hasTool } from '../src/exec.js';
import type { VerifyOptions } from '../src/stages/context.js';
import { nspawnStage } from '../src/stages/nspawn.js';
import { judgeBoot, parseProbeOutput } from '../src/boot/probe.js';
import { primaryCause } from '../src/boot/cause.js';
import { buildNspawnArgs } from '../src/tools/nspawn.js';
import { addEnabledUnit, extractDebianRoot, leftovers, makeBusyboxTree, makeImage, stageContext } from './fixtures/boot/images.js';

const tmp = await mkdtemp(join(tmpdir(), 'part-image-nspawn-'));
const debian = join(tmp, 'debian');
const images: Record<string, string> = {};
afterAll(() => rm(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  expect(process.getuid?.(), 'these tests need root').toBe(0);
  expect(await hasTool('systemd-nspawn'), 'these tests need systemd-nspawn (apt-get install systemd-container)').toBe(true);
  await extractDebianRoot(debian);
  images.debian = join(tmp, 'debian.img');
  await makeImage(debian, images.debian, 512);
  await addEnabledUnit(
    debian,
    'broken.service',
    '[Unit]\nDescription=A unit that always fails\n[Service]\nType=oneshot\nExecStart=/bin/sh -c "echo broken-unit-says-goodbye; exec /bin/false"\n[Install]\nWantedBy=multi-user.target\n',
  );
  images.failing = join(tmp, 'failing.img');
  await makeImage(debian, images.failing, 512);
  await rm(join(debian, 'etc/systemd/system/multi-user.target.wants/broken.service'));
  await addEnabledUnit(
    debian,
    'hang.service',
    '[Unit]\nDescription=A unit that never finishes starting\n[Service]\nType=oneshot\nExecStart=/bin/sh -c "echo hang-unit-starts; exec sleep infinity"\nTimeoutStartSec=infinity\n[Install]\nWantedBy=multi-user.target\n',
  );
  images.hang = join(tmp, 'hang.img');
  await makeImage(debian, images.hang, 512);
  await rm(join(debian, 'etc/systemd/system/multi-user.target.wants/hang.service'));
  // A required mount that fails: local-fs.target fails and systemd enters emergency mode.
  await mkdir(join(debian, 'etc/systemd/system/local-fs.target.requires'), { recursive: true });
  await mkdir(join(debian, 'srv/bad'), { recursive: true });
  await writeFile(join(debian, 'etc/systemd/system/srv-bad.mount'), '[Unit]\nDescription=A mount that fails\n[Mount]\nWhat=none\nWhere=/srv/bad\nType=nosuchfs\n');
  await symlink('../srv-bad.mount', join(debian, 'etc/systemd/system/local-fs.target.requires/srv-bad.mount'));
  images.emergency = join(tmp, 'emergency.img');
  await makeImage(debian, images.emergency, 512);
  const bb = join(tmp, 'bb');
  await makeBusyboxTree(bb);
  images.busybox = join(tmp, 'busybox.img');
  await makeImage(bb, images.busybox, 16);
});

let current: string | undefined;
afterEach(async () => {
  // Container, mount and loop device are gone after every run.
  if (current) expect(await leftovers(current)).toEqual({ loops: [], mounts: [] });
  expect(await leftovers(tmp)).toEqual({ loops: [], mounts: [] });
  const inner = await leftovers('part-image-nspawn-');
  expect(inner.mounts).toEqual([]);
  current = undefined;
});

async function runStage(image: string, over: Partial<VerifyOptions> = {}) {
  current = image;
  const scope = new Scope();
  const started = Date.now();
  try {
    const out = await nspawnStage.run(stageContext(image, scope, over));
    return { ...out, ms: Date.now() - started };
  } finally {
    expect(await scope.close()).toEqual([]);
  }
}

describe('nspawn stage', () => {
  it('boots the Debian root to its default target and passes', async () => {
    const out = await runStage(images.debian);
    console.log(`nspawn stage on the Debian root: ${out.ms} ms (boot ${String(out.details?.runMs)} ms)`);
    expect(out.findings).toEqual([]);
    expect(out.status).toBe('passed');
    // Reached its default target by itself, not by running into the boot timeout.
    expect(out.details).toMatchObject({ mode: 'boot', defaultTarget: 'graphical.target', defaultTargetState: 'active', timedOut: false });
  });

  it('fails a boot with a failed unit, naming it with its journal lines', async () => {
    const out = await runStage(images.failing);
    expect(out.status).toBe('failed');
    expect(out.findings.map((f) => [f.code, f.path])).toEqual([['unit-failed', 'broken.service']]);
    const f = out.findings[0];
    expect(f.message).toMatch(/^unit broken\.service failed \(result exit-code, exit status 1\): broken-unit-says-goodbye;/);
    expect((f.actual as string[]).join('\n')).toContain('broken-unit-says-goodbye');
    // The same image passes when the unit is allowed to fail.
    const allowed = await runStage(images.failing, { allowFailedUnits: ['broken'] });
    expect(allowed.status).toBe('passed');
    expect(allowed.details?.allowedFailedUnits).toEqual(['broken.service']);
  });

  it('names the pending jobs when the boot times out', async () => {
    // 20 s: the jobs probe reports from half the timeout on; with 8 s a loaded
    // 2-core machine (the fault matrix runs beside this) sometimes had not
    // booted far enough to print one before the timeout.
    const out = await runStage(images.hang, { bootTimeoutMs: 20_000 });
    expect(out.status).toBe('failed');
    const t = out.findings.find((f) => f.code === 'boot-timeout');
    expect(t, JSON.stringify(out)).toBeDefined();
    expect(t!.path).toBe('hang.service');
    expect(t!.message).toMatch(/did not finish within 20 s; still running: hang\.service \(start\); waiting: .*multi-user\.target/);
    expect(t!.message).not.toContain('part-image-probe');
    expect(JSON.stringify(t!.actual)).toContain('hang-unit-starts');
    expect(out.details?.pendingJobs).toEqual(expect.arrayContaining(['hang.service start running', 'multi-user.target start waiting']));
    expect(out.details?.timedOut).toBe(true);
    // Stopped at the timeout, not left waiting for the hung unit (which never
    // finishes): a generous bound for the teardown on a loaded machine.
    console.log(`nspawn stage with a 20 s boot timeout: ${out.ms} ms`);
    expect(out.ms).toBeLessThan(20_000 + 60_000);
  });

  it('fails fast when the boot falls into emergency mode, naming the failed unit', async () => {
    const out = await runStage(images.emergency, { bootTimeoutMs: 60_000 });
    expect(out.status).toBe('failed');
    expect(out.findings.map((f) => [f.code, f.path])).toEqual([
      ['emergency-mode', undefined],
      ['unit-failed', 'srv-bad.mount'],
    ]);
    expect(out.findings[0].message).toContain('srv-bad.mount');
    expect(out.findings[1].message).toMatch(/^unit srv-bad\.mount failed \(result exit-code\): mount: \/srv\/bad: special device none does not exist;/);
    expect(JSON.stringify(out.findings[1].actual)).toContain('special device none does not exist');
    expect(primaryCause(out.findings)).toMatch(/^unit srv-bad\.mount failed/);
    // Not the boot timeout: the jobs probe powers the container off at once.
    console.log(`nspawn stage into emergency mode: ${out.ms} ms`);
    expect(out.details?.timedOut).toBe(false);
    expect(out.findings.map((f) => f.code)).not.toContain('boot-timeout');
  });

  it('runs a busybox image in exec mode: true passes', async () => {
    const out = await runStage(images.busybox, { nspawnCommand: ['/usr/bin/busybox', 'true'] });
    expect(out.findings).toEqual([]);
    expect(out.status).toBe('passed');
    expect(out.details).toMatchObject({ mode: 'exec', exitCode: 0 });
  });

  it('runs a busybox image in exec mode: false fails with its status and output', async () => {
    const out = await runStage(images.busybox, { nspawnCommand: ['/usr/bin/busybox', 'sh', '-c', 'echo about-to-fail >&2; exit 7'] });
    expect(out.status).toBe('failed');
    expect(out.findings.map((f) => f.code)).toEqual(['command-failed']);
    expect(out.findings[0].message).toMatch(/exited with status 7 in the container; last output: about-to-fail/);
    expect(out.findings[0].actual).toMatchObject({ exitStatus: 7 });
    const f = await runStage(images.busybox, { nspawnCommand: ['/usr/bin/busybox', 'false'] });
    expect(f.findings).toMatchObject([{ code: 'command-failed', actual: { exitStatus: 1 } }]);
  });

  it('fails an image with no systemd and no command (no-boot-command)', async () => {
    const out = await runStage(images.busybox);
    expect(out.status).toBe('failed');
    expect(out.findings.map((f) => f.code)).toEqual(['no-boot-command']);
    expect(out.findings[0].message).toContain('--nspawn-command');
  });

  it('is skipped as unavailable, with how to run it, when systemd-nspawn is missing', async () => {
    const path = process.env.PATH;
    process.env.PATH = join(tmp, 'empty-path');
    try {
      const out = await runStage(images.debian);
      expect(out.status).toBe('skipped');
      expect(out.skippedBy).toBe('unavailable');
      expect(out.reason).toMatch(/apt-get install systemd-container/);
      expect(out.reason).toMatch(/root/);
      expect(out.reason).toMatch(/VM/);
    } finally {
      process.env.PATH = path;
    }
  });
});

describe('nspawn argv and probe parsing', () => {
  it('builds the argv that works on this host', () => {
    const args = buildNspawnArgs({ directory: '/m', machine: 'pi-1', mode: 'boot', bindRo: [{ host: '/h/p', container: '/run/p' }], initArgs: ['systemd.wants=x.service'] });
    for (const a of ['--register=no', '--keep-unit', '--resolv-conf=off', '--timezone=off', '--volatile=overlay', '--directory=/m', '--boot', '--bind-ro=/h/p:/run/p']) {
      expect(args).toContain(a);
    }
    expect(args.at(-1)).toBe('systemd.wants=x.service');
    expect(args.some((a) => a.startsWith('--image'))).toBe(false);
    const exec = buildNspawnArgs({ directory: '/m', machine: 'pi-1', mode: 'exec', command: ['/bin/true', '--flag'] });
    expect(exec.slice(-3)).toEqual(['--', '/bin/true', '--flag']);
    expect(() => buildNspawnArgs({ directory: '/m', machine: 'x', mode: 'exec', command: [] })).toThrow();
  });

  it('reads a probe report that a jobs snapshot landed inside (a slow boot, where both probes print)', () => {
    const text = [
      'PART-IMAGE-PROBE begin',
      'PART-IMAGE-PROBE state=starting',
      'PART-IMAGE-PROBE default-target=graphical.target active=active',
      'PART-IMAGE-PROBE jobs-begin state=starting',
      'PART-IMAGE-PROBE job id=7 unit=x.service type=start state=running',
      'PART-IMAGE-PROBE jobs-end',
      'PART-IMAGE-PROBE failed unit=c.service result=exit-code status=1',
      'PART-IMAGE-PROBE end',
    ].join('\n');
    const r = parseProbeOutput(text);
    expect(r.complete).toBe(true);
    expect(r).toMatchObject({ state: 'starting', defaultTarget: 'graphical.target', defaultTargetState: 'active' });
    expect(r.failed.map((u) => u.unit)).toEqual(['c.service']);
    expect(r.lastJobs?.jobs.map((j) => j.unit)).toEqual(['x.service']);
  });

  it('parses marker lines between console noise, keeping the last jobs snapshot', () => {
    const text = [
      '\x1b[0;32m  OK  \x1b[0m] Started foo.\r',
      'PART-IMAGE-PROBE jobs-begin state=starting\r',
      'PART-IMAGE-PROBE job id=1 unit=a.service type=start state=running\r',
      'PART-IMAGE-PROBE jobs-end\r',
      'noise PART-IMAGE-PROBE jobs-begin state=starting\r',
      'PART-IMAGE-PROBE job id=2 unit=b.service type=start state=waiting\r',
      'PART-IMAGE-PROBE failed unit=c.service result=exit-code status=1\r',
      'PART-IMAGE-PROBE journal unit=c.service | c says hi\r',
      'PART-IMAGE-PROBE jobs-end\r',
    ].join('\n');
    const r = parseProbeOutput(text);
    expect(r.complete).toBe(false);
    expect(r.lastJobs).toEqual({
      state: 'starting',
      jobs: [{ id: 2, unit: 'b.service', type: 'start', state: 'waiting', journal: [] }],
      failed: [{ unit: 'c.service', result: 'exit-code', status: '1', journal: ['c says hi'] }],
    });
    const judged = judgeBoot({ stdout: text, stderr: '', exitCode: -1, timedOut: true }, { bootTimeoutMs: 5000, allowFailedUnits: [] });
    expect(judged.findings.map((f) => f.code)).toEqual(['boot-timeout', 'unit-failed']);
  });

  it('reports a container that dies before the probe', () => {
    const judged = judgeBoot({ stdout: '', stderr: 'Directory /m does not look like an OS tree\n', exitCode: 1, timedOut: false }, { bootTimeoutMs: 5000, allowFailedUnits: [] });
    expect(judged.findings).toMatchObject([{ code: 'boot-failed', message: expect.stringContaining('does not look like an OS tree') }]);
  });
});
