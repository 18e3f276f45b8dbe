// The portable stage. Pure tests of the job script, the result parser and
// the judgement; then real runs: busybox portable-service images attached
// with portablectl (in the VM here and in CI, where systemd is not PID 1).
// One VM boot checks two images at once (a good one and one whose service
// exits 1); one more runs the stage end to end. Nothing is skipped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { chmod, copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { Scope } from '../src/cleanup.js';
import { readInput } from '../src/input/index.js';
import { buildRawImage } from '../src/build/index.js';
import { hostBusybox } from './helpers/busybox.js';
import { ensureVmImage } from '../src/vm/image.js';
import type { StageContext, VerifyOptions } from '../src/stages/context.js';
import { portableOutcome, portableStage } from '../src/stages/portable.js';
import { buildPortableJob, isStartable, parseProgress, phaseWords, UNIT_DIRS, whereJobStopped, type PortableImage } from '../src/stages/portable-job.js';
import { judgePortable, parsePortableResults, unitOk, type UnitCheck } from '../src/stages/portable-judge.js';
import { checkPortable, type CheckPortableResult } from '../src/stages/portable-run.js';
import type { VmResult } from '../src/vm/run.js';

const VM_TEST_MS = 400_000;

const ONESHOT = `[Unit]
Description=demo portable service

[Service]
Type=oneshot
ExecStart=/usr/bin/busybox sh -c 'echo hi from demo'
`;
const DAEMON = `[Unit]
Description=demo portable daemon

[Service]
ExecStart=/usr/bin/busybox sleep 3600
`;
const FAILING = `[Unit]
Description=a service that fails

[Service]
Type=oneshot
ExecStart=/usr/bin/busybox sh -c 'echo about to fail; exit 1'
`;

let scope: Scope;
let work: string;

/** A busybox portable-service image: os-release, empty resolv.conf and machine-id, the API dirs, and `units`. */
async function portableRaw(name: string, units: Record<string, string>): Promise<string> {
  const root = join(work, `${name}.d`);
  for (const d of ['usr/bin', 'etc', 'proc', 'sys', 'dev', 'run', 'tmp', 'var/tmp', 'usr/lib/systemd/system']) {
    await mkdir(join(root, d), { recursive: true });
  }
  await copyFile(hostBusybox(), join(root, 'usr/bin/busybox'));
  await chmod(join(root, 'usr/bin/busybox'), 0o755);
  await writeFile(join(root, 'etc/os-release'), 'ID=demo\nNAME="Demo"\nVERSION_ID=1.0\n');
  await writeFile(join(root, 'etc/resolv.conf'), '');
  await writeFile(join(root, 'etc/machine-id'), '');
  for (const [unit, text] of Object.entries(units)) await writeFile(join(root, 'usr/lib/systemd/system', unit), text);
  const tree = await readInput(root, scope);
  const out = join(work, `${name}.raw`);
  await buildRawImage(tree, out, { label: 'demo', freeMb: 4, usedMb: tree.usedMb }, scope);
  return out;
}

function opts(over: Partial<VerifyOptions> = {}): VerifyOptions {
  return { skip: new Set(), compareMtime: false, bootTimeoutMs: 60_000, allowFailedUnits: [], portable: false, ...over };
}

beforeAll(async () => {
  scope = new Scope();
  work = await scope.tempDir('part-image-portable-test-');
}, 60_000);

afterAll(async () => {
  await scope?.close();
});

describe('the portable job (pure)', () => {
  const images: PortableImage[] = [
    { path: '/h/demo.raw', name: 'demo_1.0.raw', units: ['demo.service', 'demo@.service', 'demo-x.socket'] },
    { path: "/h/it's.raw", name: 'odd_2.raw', units: ['odd.service'] },
  ];
  // The host: copied to /var/tmp first. The VM: attached where the job disk has it.
  const host = [{ path: '/var/tmp/demo_1.0.raw', copyFrom: '/h/demo.raw' }, { path: '/var/tmp/odd_2.raw', copyFrom: "/h/it's.raw" }];
  const inVm = [{ path: '/run/part-image/job/files/demo_1.0.raw' }, { path: '/run/part-image/job/files/odd_2.raw' }];
  const { script: job, data } = buildPortableJob(images, host);
  const vmJob = buildPortableJob(images, inVm, { detach: false }).script;

  it('on the host copies each image to /var/tmp/NAME, then inspects and attaches it at runtime', () => {
    expect(job).toContain('v i0.from');
    expect(job).toContain('cp --sparse=always "$R" "$P0"');
    expect(data['i0.from']).toBe('/h/demo.raw');
    expect(data['i1.from']).toBe("/h/it's.raw");
    expect(data['i0.path']).toBe('/var/tmp/demo_1.0.raw');
    expect(job).toContain('$PCTL inspect "$P0"');
    expect(job).toContain('$PCTL attach --runtime $nr "$P0"');
  });

  it('in the VM attaches each image where it is, copying nothing', () => {
    expect(vmJob).not.toContain('cp ');
    expect(vmJob).not.toContain('i0.from');
    expect(buildPortableJob(images, inVm).data['i0.path']).toBe('/run/part-image/job/files/demo_1.0.raw');
    expect(vmJob).toContain('$PCTL attach --runtime $nr "$P1"');
  });

  it('attaches with --no-reload unless the system has a unit file of a name the image brings', () => {
    expect(job).toContain('nr=--no-reload');
    expect(job).toContain('known "$U0_0" && nr=');
    expect(job).toContain('known "$U0_2" && nr=');
    expect(job).toContain('known "$U1_0" && nr=');
    for (const d of ['/etc/systemd/system', '/run/systemd/system', '/usr/lib/systemd/system', '/run/systemd/transient']) expect(UNIT_DIRS).toContain(d);
  });

  it('starts the startable units, then stops them before detaching', () => {
    expect(data['i0.u0']).toBe('demo.service');
    expect(data['i0.u2']).toBe('demo-x.socket');
    expect(job).toContain('systemctl start "$U0_0"');
    expect(job).toContain('systemctl start "$U0_2"');
    expect(job).not.toContain('systemctl start "$U0_1"');
    expect(job.indexOf('systemctl stop "$U0_0" "$U0_2"')).toBeLessThan(job.indexOf('detach --runtime "$P0"'));
    expect(isStartable('demo@.service')).toBe(false);
    expect(isStartable('demo@one.service')).toBe(true);
    expect(isStartable('demo.mount')).toBe(false);
  });

  it('holds no name of an image, a source or a unit: they are data', () => {
    for (const value of Object.values(data)) expect(job).not.toContain(value);
  });

  it('refuses two images of one name: portabled tells them apart by name', () => {
    expect(() => buildPortableJob([images[0], { ...images[1], name: 'demo_1.0.raw' }], host)).toThrow(/two images of one name/);
    expect(() => buildPortableJob(images, host.slice(0, 1))).toThrow(/2 images but 1 places/);
  });

  it('is valid sh, and forks nothing to read its values', async () => {
    const { run } = await import('../src/exec.js');
    await run('sh', ['-n', '-c', job]);
    await run('sh', ['-n', '-c', vmJob]);
    await run('sh', ['-n', '-c', buildPortableJob(images, host, { console: '/dev/console' }).script]);
    // $(( )) is arithmetic, a builtin; $( ) would fork.
    expect(job).not.toMatch(/\$\((?!\()|`|\bcat\b/);
  });

  it('marks each step it begins, so that a job cut short says where it was', () => {
    const marks = [...job.matchAll(/^\s*mark (.+)$/gm)].map((m) => m[1]);
    expect(marks).toEqual([
      'i0 copy', 'i0 attach', 'i1 copy', 'i1 attach',
      'i0 u0 start', 'i0 u2 start', 'i1 u0 start',
      'settle',
      'i0 show', 'i0 stop', 'i0 detach', 'i1 show', 'i1 stop', 'i1 detach',
      'end',
    ]);
    expect(job).toMatch(/^C=$/m);
    expect(buildPortableJob(images, host, { console: '/dev/console' }).script).toContain('C=/dev/console');
  });

  it('in a VM that is thrown away: skips stop and detach unless asked', () => {
    expect(vmJob).not.toContain('systemctl stop');
    expect(vmJob).not.toContain('detach --runtime');
    expect([...vmJob.matchAll(/^\s*mark (.+)$/gm)].map((m) => m[1])).toEqual([
      'i0 attach', 'i1 attach', 'i0 u0 start', 'i0 u2 start', 'i1 u0 start', 'settle', 'i0 show', 'i1 show', 'end',
    ]);
    const withDetach = buildPortableJob(images, inVm, { detach: true }).script;
    expect(withDetach).toContain('$PCTL detach --runtime "$P0"');
    // Nothing of the job disk is removed: only what the job copied.
    expect(withDetach).not.toContain('rm -f');
  });

  it('waits for the started units to settle by polling all their states with one systemctl show a round, not with a fixed sleep', () => {
    expect(job).not.toMatch(/sleep [0-9]/);
    expect(job).toContain('while poll "$@"');
    expect(job).toMatch(/systemctl show (-p \w+ )+"\$@"/);
    expect(job).toContain('ActiveEnterTimestampMonotonic');
    expect(job).toContain('K="$K i0.u0"; set -- "$@" "$U0_0"');
    expect(job).not.toContain('K="$K i0.u1"');
  });

  it('names the phase of the last mark for the progress line', () => {
    expect(phaseWords(['i0 copy', 'i0 attach'], images)).toBe('attaching demo_1.0.raw');
    expect(phaseWords(['i0 copy', 'i0 attach', 'i0 u2 start'], images)).toBe('starting demo-x.socket');
    expect(phaseWords(['settle'], images)).toBe('waiting for the started units to settle');
    expect(phaseWords([], images)).toBeUndefined();
  });

  it('reads the marks back from the progress file or the console, and names the step and unit of the last one', () => {
    expect(parseProgress('i0 copy\ni0 attach\n')).toEqual(['i0 copy', 'i0 attach']);
    const console = '[  OK  ] Reached target multi-user.target\r\nPART-IMAGE-PORTABLE i0 copy\r\nsome noise PART-IMAGE-PORTABLE i0 attach\n[   30.1] systemd[1]: Starting demo.service...\nPART-IMAGE-PORTABLE i0 u2 start\n';
    const progress = parseProgress(console, true);
    expect(progress).toEqual(['i0 copy', 'i0 attach', 'i0 u2 start']);
    expect(whereJobStopped(progress, images)).toEqual({ step: 'start', image: 0, units: ['demo-x.socket'] });
    expect(whereJobStopped([...progress, 'settle', 'i0 show', 'i0 stop'], images)).toEqual({ step: 'stop', image: 0, units: ['demo.service', 'demo-x.socket'] });
    expect(whereJobStopped(['i1 copy'], images)).toEqual({ step: 'copy', image: 1, units: [] });
    expect(whereJobStopped([], images)).toEqual({ step: 'unknown', units: [] });
    expect(whereJobStopped(['garbage here'], images)).toEqual({ step: 'unknown', units: [] });
  });
});

// Captured from a real VM run (demo_1.0.raw with a oneshot, bad_1.0.raw whose service exits 1).
function captured(): Map<string, Buffer> {
  const f: Record<string, string> = {
    'i0.attach.rc': '0\n',
    'i0.attach': "(Matching unit files with prefix 'demo'.)\nCopied /run/systemd/system.attached/demo.service.\nCreated symlink /run/portables/demo_1.0.raw -> /var/tmp/demo_1.0.raw.\n",
    'i0.inspect': "(Matching unit files with prefix 'demo'.)\nImage:\n\t/var/tmp/demo_1.0.raw\nUnit files:\n\tdemo.service\n",
    'i0.u0.start.rc': '0\n',
    'i0.u0.start': '',
    'i0.u0.show': 'Type=oneshot\nResult=success\nExecMainCode=0\nExecMainStatus=0\nId=demo.service\nLoadState=loaded\nActiveState=inactive\nSubState=dead\n',
    'i0.u0.journal': '[   21.130822] busybox[377]: hi from demo\n[   21.155760] systemd[1]: Finished demo.service - demo.\n',
    'i0.detach.rc': '0\n',
    'i0.detach': 'Removed /run/portables/demo_1.0.raw.\n',
    'i1.attach.rc': '0\n',
    'i1.attach': "(Matching unit files with prefix 'bad'.)\n",
    'i1.u0.start.rc': '1\n',
    'i1.u0.start': 'Job for bad.service failed because the control process exited with error code.\n',
    'i1.u0.show': 'Type=oneshot\nResult=exit-code\nExecMainCode=1\nExecMainStatus=1\nId=bad.service\nLoadState=loaded\nActiveState=failed\nSubState=failed\n',
    'i1.u0.journal':
      "[   22.254565] busybox[388]: about to fail\n[   22.281574] systemd[1]: bad.service: Main process exited, code=exited, status=1/FAILURE\n[   22.308291] systemd[1]: Failed to start bad.service.\n",
    'i1.detach.rc': '0\n',
  };
  return new Map(Object.entries(f).map(([k, v]) => [k, Buffer.from(v)]));
}

describe('parsing and judging (pure)', () => {
  const imgs: PortableImage[] = [
    { path: '/a', name: 'demo_1.0.raw', units: ['demo.service'] },
    { path: '/b', name: 'bad_1.0.raw', units: ['bad.service'] },
  ];

  it('passes a oneshot that exited 0, and fails one that exited 1 with its journal', () => {
    const [good, bad] = parsePortableResults(captured(), imgs);
    expect(good.attachExit).toBe(0);
    expect(good.inspect).toContain('demo.service');
    expect(judgePortable(good)).toEqual([]);
    const findings = judgePortable(bad);
    expect(findings).toHaveLength(1);
    expect(findings[0]).toMatchObject({ code: 'portable-service-failed', path: 'bad.service' });
    expect(findings[0].message).toMatch(/failed \(failed\), result exit-code, exit status 1; last journal line: busybox\[388\]: about to fail/);
    expect(findings[0].actual).toContain('[   22.254565] busybox[388]: about to fail');
  });

  it("reports a failed attach in portablectl's own words", () => {
    const files = captured();
    files.set('i0.attach.rc', Buffer.from('1\n'));
    files.set('i0.attach', Buffer.from("Failed to attach: No unit files matching prefix 'demo' found\n"));
    const [c] = parsePortableResults(files, imgs);
    expect(judgePortable(c)).toEqual([
      expect.objectContaining({ code: 'portable-attach-failed', path: 'demo_1.0.raw', message: expect.stringMatching(/exit 1\): Failed to attach: No unit files/) }),
    ]);
    files.delete('i0.attach.rc');
    expect(judgePortable(parsePortableResults(files, imgs)[0])[0].message).toMatch(/stopped before the attach/);
  });

  it('judges unit states', () => {
    const u = (props: Record<string, string>, unit = 'x.service', startExit = 0): UnitCheck => ({
      unit, started: true, startExit, startOutput: '', journal: [], props: { LoadState: 'loaded', ...props },
    });
    expect(unitOk(u({ ActiveState: 'active', SubState: 'running' }))).toBe(true);
    expect(unitOk(u({ ActiveState: 'inactive', Result: 'success', ExecMainStatus: '0' }))).toBe(true);
    expect(unitOk(u({ ActiveState: 'inactive', Result: 'success', ExecMainStatus: '0' }, 'x.socket'))).toBe(false);
    expect(unitOk(u({ ActiveState: 'activating', SubState: 'auto-restart', Result: 'exit-code' }))).toBe(false);
    expect(unitOk(u({ ActiveState: 'failed', Result: 'exit-code', ExecMainStatus: '1' }))).toBe(false);
    expect(unitOk(u({ ActiveState: 'inactive', Result: 'success', ExecMainStatus: '0' }, 'x.service', 124))).toBe(false);
    expect(unitOk(u({ LoadState: 'not-found', ActiveState: 'inactive' }))).toBe(false);
  });
});

describe('whose fault: the verdict on a check (pure)', () => {
  const image: PortableImage = { path: '/a', name: 'demo_1.0.raw', units: ['demo.service'] };
  const vm = (over: Partial<VmResult>): VmResult => ({
    started: true, files: new Map(), errors: [], accel: 'tcg', timedOut: false, qemuExitCode: 0, qemuStderr: '', console: '', jobLog: '', durationMs: 1, boot: 'restore', phases: {}, guestMarks: {}, ...over,
  });
  const checks = (files: Map<string, Buffer>) => parsePortableResults(files, [image]);

  it('a VM that did not come up in time is the environment: skipped, unavailable', () => {
    const r: CheckPortableResult = {
      where: 'vm', timedOut: true, progress: [], durationMs: 1,
      vm: vm({ started: false, timedOut: true, console: 'Booting the kernel\n' }),
      vmError: 'the VM (tcg) was killed after 300 s: the VM had not finished booting; last console line: Booting the kernel',
    };
    const out = portableOutcome(r, image, 300_000);
    expect(out).toMatchObject({ status: 'skipped', skippedBy: 'unavailable', findings: [] });
    expect(out.reason).toMatch(/the part-image VM failed \(the VM \(tcg\) was killed after 300 s: the VM had not finished booting/);
    expect(out.details?.console).toEqual(['Booting the kernel']);
  });

  it('a VM that came up, killed while a unit of the image was starting, is a finding about the image naming the unit', () => {
    const r: CheckPortableResult = {
      where: 'vm', timedOut: true, durationMs: 1,
      progress: parseProgress('PART-IMAGE-PORTABLE i0 copy\nPART-IMAGE-PORTABLE i0 attach\nPART-IMAGE-PORTABLE i0 u0 start\n', true),
      vm: vm({ started: true, timedOut: true }),
      vmError: 'the VM (tcg) was killed after 300 s: the job was still running; last console line: x',
    };
    const out = portableOutcome(r, image, 300_000);
    expect(out.status).toBe('failed');
    expect(out.findings).toEqual([
      expect.objectContaining({
        code: 'portable-service-timeout',
        path: 'demo.service',
        message: expect.stringMatching(/^demo\.service of the attached image demo_1\.0\.raw did not finish starting: `systemctl start demo\.service` had not returned when the portable check ran out of time \(300 s, VM boot included\)/),
      }),
    ]);
    expect(out.details?.timedOutIn).toBe('start');
  });

  it("the same from the job's own files when the in-guest limit stopped it (exit 124): the hung start left no exit status", () => {
    const files = captured();
    for (const k of [...files.keys()]) if (k.startsWith('i1.') || k.startsWith('i0.u0.show') || k.startsWith('i0.u0.journal') || k.startsWith('i0.detach') || k === 'i0.u0.start.rc') files.delete(k);
    files.set('progress', Buffer.from('i0 copy\ni0 attach\ni0 u0 start\n'));
    const r: CheckPortableResult = { where: 'vm', timedOut: true, progress: parseProgress(files.get('progress')!.toString()), checks: checks(files), vm: vm({ exitCode: 124 }), durationMs: 1 };
    const out = portableOutcome(r, image, 300_000);
    expect(out.findings.map((f) => [f.code, f.path])).toEqual([['portable-service-timeout', 'demo.service']]);
  });

  it('out of time anywhere else (copy, attach, reading states) is the environment', () => {
    for (const progress of [['i0 copy'], ['i0 copy', 'i0 attach'], ['i0 copy', 'i0 attach', 'i0 u0 start', 'settle', 'i0 show'], []]) {
      const r: CheckPortableResult = { where: 'vm', timedOut: true, progress, vm: vm({ timedOut: true }), vmError: 'killed', durationMs: 1 };
      const out = portableOutcome(r, image, 300_000);
      expect(out, progress.join(',')).toMatchObject({ status: 'skipped', skippedBy: 'unavailable', findings: [] });
      expect(out.reason).toMatch(/ran out of time \(300 s\) in the part-image VM, which did come up, during .*not while a unit of the image was starting or stopping/);
    }
  });

  it("a unit whose own 90 s start limit ran out is a portable-service-timeout too", () => {
    const files = captured();
    files.set('i0.u0.start.rc', Buffer.from('124\n'));
    files.set('i0.u0.show', Buffer.from('Id=demo.service\nLoadState=loaded\nActiveState=activating\nSubState=start\n'));
    const [c] = checks(files);
    expect(judgePortable(c)).toEqual([expect.objectContaining({ code: 'portable-service-timeout', path: 'demo.service', message: expect.stringMatching(/systemctl start timed out after 90 s/) })]);
  });

  it("on the host, a /var/tmp/NAME.raw that is not ours is the host's problem: skipped (unavailable), saying what to remove", () => {
    const files = new Map([
      ['i0.attach', Buffer.from('/var/tmp/demo_1.0.raw already exists: another image of that name is in the way\n')],
      ['i0.attach.rc', Buffer.from('125\n')],
      ['progress', Buffer.from('i0 copy\nsettle\nend\n')],
    ]);
    const r: CheckPortableResult = { where: 'host', timedOut: false, progress: ['i0 copy', 'settle', 'end'], checks: checks(files), durationMs: 1 };
    const out = portableOutcome(r, image, 300_000);
    expect(out).toMatchObject({ status: 'skipped', skippedBy: 'unavailable', findings: [] });
    expect(out.reason).toContain('/var/tmp/demo_1.0.raw already exists on this host and is not part-image\'s');
    expect(out.reason).toContain('`rm /var/tmp/demo_1.0.raw`');
  });
});

describe('the host path, with fake portablectl/systemctl/journalctl on PATH', () => {
  it('runs the same job on the host, collects its files, and cleans /var/tmp up', async () => {
    const bin = join(work, 'fakebin');
    await mkdir(bin, { recursive: true });
    const tool = async (name: string, body: string) => {
      await writeFile(join(bin, name), `#!/bin/sh\n${body}\n`);
      await chmod(join(bin, name), 0o755);
    };
    await tool('portablectl', [
      'for a in "$@"; do case "$a" in --*) ;; *) set -- "$@" "$a" ;; esac; shift; done',
      'case "$1" in',
      '  inspect) printf "Image:\\n\\t%s\\nUnit files:\\n\\thostdemo.service\\n" "$2" ;;',
      '  attach) [ -f "$2" ] && echo "Copied hostdemo.service" ;;',
      '  list) echo "hostdemo_1 raw attached-runtime" ;;',
      '  detach) echo "Removed hostdemo.service" ;;',
      'esac',
    ].join('\n'));
    await tool('systemctl', [
      'case "$1" in',
      '  show) printf "Id=hostdemo.service\\nLoadState=loaded\\nActiveState=failed\\nSubState=failed\\nResult=exit-code\\nExecMainStatus=3\\n" ;;',
      '  start) exit 1 ;;',
      'esac',
    ].join('\n'));
    await tool('journalctl', 'echo "[ 1.0] hostdemo[1]: no config file"');
    await tool('sleep', 'exit 0');
    const image = join(work, 'host-image.raw');
    await writeFile(image, 'not really an image');
    const name = `hostdemo_${process.pid}.raw`;
    const savedPath = process.env.PATH;
    process.env.PATH = `${bin}:${savedPath}`;
    try {
      const r = await checkPortable([{ path: image, name, units: ['hostdemo.service'] }], { scope, timeoutMs: 30_000, where: 'host' });
      expect(r.where).toBe('host');
      const [c] = r.checks!;
      expect(c.attachExit).toBe(0);
      expect(c.inspect).toContain(`/var/tmp/${name}`);
      expect(c.detachExit).toBe(0);
      expect(judgePortable(c)).toEqual([
        expect.objectContaining({ code: 'portable-service-failed', path: 'hostdemo.service', message: expect.stringMatching(/exit status 3; last journal line: hostdemo\[1\]: no config file/) }),
      ]);
      expect(existsSync(`/var/tmp/${name}`)).toBe(false);
    } finally {
      process.env.PATH = savedPath;
    }
  });

  /** Stand-ins for the settle tests: portablectl and journalctl do nothing, sleep notes its time and sleeps, systemctl is `systemctl(log)`. */
  async function settleTools(name: string, systemctl: (log: string) => string): Promise<{ bin: string; log: string }> {
    const bin = join(work, `fakebin-${name}`);
    const log = join(work, `${name}.log`);
    await mkdir(bin, { recursive: true });
    await writeFile(log, '');
    const tools: Record<string, string> = {
      portablectl: 'exit 0',
      journalctl: 'exit 0',
      sleep: `echo "sleep $1" >> ${log}; exec /bin/sleep "$1"`,
      systemctl: systemctl(log),
    };
    for (const [tool, body] of Object.entries(tools)) {
      await writeFile(join(bin, tool), `#!/bin/sh\n${body}\n`);
      await chmod(join(bin, tool), 0o755);
    }
    return { bin, log };
  }

  /** Fake tools in their own folder; `systemctl start` runs `startBody`. */
  async function fakeTools(dirName: string, startBody: string): Promise<string> {
    const bin = join(work, dirName);
    await mkdir(bin, { recursive: true });
    const tool = async (name: string, body: string) => {
      await writeFile(join(bin, name), `#!/bin/sh\n${body}\n`);
      await chmod(join(bin, name), 0o755);
    };
    await tool('portablectl', 'exit 0');
    await tool('systemctl', `case "$1" in start) ${startBody} ;; show) printf "Id=x\\nLoadState=loaded\\nActiveState=active\\n" ;; esac`);
    await tool('journalctl', 'exit 0');
    return bin;
  }

  async function withPath<T>(bin: string, fn: () => Promise<T>): Promise<T> {
    const savedPath = process.env.PATH;
    process.env.PATH = `${bin}:${savedPath}`;
    try {
      return await fn();
    } finally {
      process.env.PATH = savedPath;
    }
  }

  it("leaves alone a /var/tmp/NAME.raw that is not ours, and the stage's verdict is 'unavailable' (host), not a finding", async () => {
    const bin = await fakeTools('fakebin-inway', 'exit 0');
    const name = `inway_${process.pid}.raw`;
    const theirs = `/var/tmp/${name}`;
    await writeFile(theirs, 'somebody else\'s image\n');
    const image = join(work, 'inway.raw');
    await writeFile(image, 'not really an image');
    const s = new Scope();
    try {
      const img: PortableImage = { path: image, name, units: ['inway.service'] };
      const r = await withPath(bin, async () => {
        const res = await checkPortable([img], { scope: s, timeoutMs: 30_000, where: 'host' });
        await s.close();
        return res;
      });
      expect(r.checks![0].attachExit).toBe(125);
      const out = portableOutcome(r, img, 30_000);
      expect(out).toMatchObject({ status: 'skipped', skippedBy: 'unavailable' });
      expect(out.reason).toContain(`rm ${theirs}`);
      expect(await readFile(theirs, 'utf8')).toBe('somebody else\'s image\n');
    } finally {
      await rm(theirs, { force: true });
    }
  });

  it('settles with one systemctl show a round: waits out the rest of the settle time of an active unit, none for one active/exited, and files each unit its state', async () => {
    // Round 1: a.service is activating, b.service became active 0.3 s ago; round 2 on: a is active/exited, b still active.
    const { bin, log } = await settleTools('settle', (log) => [
      'case "$1" in start) exit 0 ;; esac',
      `echo "show $*" >> ${log}`,
      `n=$(grep -c '^show' ${log})`,
      "read -r up _ < /proc/uptime; t=$(( ${up%.*}${up#*.} * 10000 - 300000 ))",
      '[ -f "$0.t" ] || echo $t > "$0.t"; read -r t < "$0.t"',
      'if [ $n = 1 ]; then printf "Id=a.service\\nLoadState=loaded\\nActiveState=activating\\nSubState=start\\n\\n"; else printf "Id=a.service\\nLoadState=loaded\\nActiveState=active\\nSubState=exited\\nActiveEnterTimestampMonotonic=1\\n\\n"; fi',
      'printf "Id=b.service\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\nActiveEnterTimestampMonotonic=%s\\n" $t',
    ].join('\n'));
    const image = join(work, 'settle.raw');
    await writeFile(image, 'not really an image');
    const img: PortableImage = { path: image, name: `settle_${process.pid}.raw`, units: ['a.service', 'b.service'] };
    const s = new Scope();
    const r = await withPath(bin, async () => {
      const res = await checkPortable([img], { scope: s, timeoutMs: 30_000, where: 'host' });
      await s.close();
      return res;
    });
    const calls = (await readFile(log, 'utf8')).trim().split('\n');
    const shows = calls.filter((c) => c.startsWith('show'));
    // Every round asks for both units at once.
    for (const c of shows) expect(c).toMatch(/ a\.service b\.service$/);
    const sleeps = calls.filter((c) => c.startsWith('sleep')).map((c) => Number(c.split(' ')[1]));
    // Round 1 polls again soon (a is in transition); then b's remaining settle time, at most 0.7 s; never more than 30 s of polling.
    expect(sleeps[0]).toBe(0.05);
    expect(sleeps.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...sleeps)).toBeLessThanOrEqual(0.7);
    expect(shows.length).toBeLessThanOrEqual(5);
    const [c] = r.checks!;
    expect(c.units.map((u) => [u.unit, u.props.ActiveState, u.props.SubState])).toEqual([
      ['a.service', 'active', 'exited'],
      ['b.service', 'active', 'running'],
    ]);
    expect(judgePortable(c)).toEqual([]);
  });

  it('takes a unit that is active/exited as settled at once, however recent its start', async () => {
    // Active since this very moment, but exited: a oneshot that has run its course.
    const { bin, log } = await settleTools('exited', (log) => [
      'case "$1" in start) exit 0 ;; esac',
      `echo "show $*" >> ${log}`,
      "read -r up _ < /proc/uptime; t=$(( ${up%.*}${up#*.} * 10000 ))",
      'printf "Id=a.service\\nLoadState=loaded\\nActiveState=active\\nSubState=exited\\nActiveEnterTimestampMonotonic=%s\\n" $t',
    ].join('\n'));
    const image = join(work, 'exited.raw');
    await writeFile(image, 'not really an image');
    const s = new Scope();
    const r = await withPath(bin, async () => {
      const res = await checkPortable([{ path: image, name: `exited_${process.pid}.raw`, units: ['a.service'] }], { scope: s, timeoutMs: 30_000, where: 'host' });
      await s.close();
      return res;
    });
    const calls = (await readFile(log, 'utf8')).trim().split('\n');
    // One poll, no sleep (the stop at the end goes through the stand-in too).
    expect(calls.filter((c) => c.startsWith('show show -p'))).toEqual(['show show -p Id -p LoadState -p ActiveState -p SubState -p Result -p Type -p ExecMainCode -p ExecMainStatus -p ActiveEnterTimestampMonotonic -p MainPID a.service']);
    expect(calls.filter((c) => c.startsWith('sleep'))).toEqual([]);
    expect(r.checks![0].units[0].props).toMatchObject({ ActiveState: 'active', SubState: 'exited' });
  });

  it('knows a unit file of the same name, or of its template, anywhere systemd looks: then it attaches with a reload', async () => {
    const { script } = buildPortableJob([{ path: '/x', name: 'demo_1.raw', units: ['demo.service'] }], [{ path: '/x' }]);
    const known = script.split('\n').find((l) => l.startsWith('known() '))!;
    const r = await execa('unshare', ['-m', 'sh', '-c', [
      'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && touch /run/systemd/system/tpl@.service /run/systemd/system/plain.service',
      known,
      'for u in plain.service tpl@one.service tpl@.service other.service other@x.service; do if known "$u"; then echo "$u yes"; else echo "$u no"; fi; done',
    ].join('\n')]);
    expect(r.stdout.split('\n')).toEqual(['plain.service yes', 'tpl@one.service yes', 'tpl@.service yes', 'other.service no', 'other@x.service no']);
  });

  it('a job that runs out of time while a unit of the image is starting names that unit (portable-service-timeout)', async () => {
    const bin = await fakeTools('fakebin-hang', 'exec /bin/sleep 10');
    const name = `hang_${process.pid}.raw`;
    const image = join(work, 'hang.raw');
    await writeFile(image, 'not really an image');
    const img: PortableImage = { path: image, name, units: ['hang.service'] };
    const s = new Scope();
    const t = Date.now();
    const r = await withPath(bin, async () => {
      const res = await checkPortable([img], { scope: s, timeoutMs: 3_000, where: 'host' });
      await s.close();
      return res;
    });
    expect(Date.now() - t).toBeLessThan(15_000);
    expect(r.timedOut).toBe(true);
    expect(r.progress.at(-1)).toBe('i0 u0 start');
    const out = portableOutcome(r, img, 3_000);
    expect(out.status).toBe('failed');
    expect(out.findings).toEqual([expect.objectContaining({ code: 'portable-service-timeout', path: 'hang.service', message: expect.stringMatching(/on the host/) })]);
    // Detached and removed by the scope.
    expect(existsSync(`/var/tmp/${name}`)).toBe(false);
  }, 30_000);
});

describe('portablectl in the VM', () => {
  let demo: string;
  let bad: string;
  let notPortable: string;

  beforeAll(async () => {
    demo = await portableRaw('demo_1.0', { 'demo.service': ONESHOT, 'demo-daemon.service': DAEMON });
    bad = await portableRaw('bad_1.0', { 'bad.service': FAILING });
    notPortable = await portableRaw('other_1.0', { 'unrelated.service': ONESHOT });
    await ensureVmImage();
  }, 1_800_000);

  it('attaches two images in one boot: the good one runs, the failing one is named with its journal', async () => {
    const r = await checkPortable(
      [
        { path: demo, name: 'demo_1.0.raw', units: ['demo-daemon.service', 'demo.service'] },
        { path: bad, name: 'bad_1.0.raw', units: ['bad.service'] },
      ],
      // Detaching is checked here: the VM would be thrown away without it.
      { scope, timeoutMs: 300_000, where: 'vm', checkDetach: true },
    );
    console.log(`portable check of 2 images in one VM run (${r.vm?.accel}): ${r.durationMs} ms`);
    expect(r.vmError).toBeUndefined();
    expect(r.timedOut).toBe(false);
    // The progress marks reach the host twice: in the job's files, and on the
    // console, which is all there is when the host has to kill the VM.
    expect(r.progress.at(-1)).toBe('end');
    expect(parseProgress(r.vm!.console, true)).toEqual(r.progress);
    const [good, failing] = r.checks!;
    expect(good.attachExit).toBe(0);
    expect(good.inspect).toMatch(/demo\.service/);
    const byName = Object.fromEntries(good.units.map((u) => [u.unit, u]));
    expect(byName['demo.service'].props).toMatchObject({ ActiveState: 'inactive', Result: 'success', ExecMainStatus: '0' });
    expect(byName['demo.service'].journal.join('\n')).toContain('hi from demo');
    expect(byName['demo-daemon.service'].props).toMatchObject({ ActiveState: 'active', SubState: 'running' });
    expect(good.detachExit).toBe(0);
    expect(judgePortable(good)).toEqual([]);

    expect(failing.attachExit).toBe(0);
    const findings = judgePortable(failing);
    expect(findings.map((f) => f.code)).toEqual(['portable-service-failed']);
    expect(findings[0].path).toBe('bad.service');
    expect((findings[0].actual as string[]).join('\n')).toContain('about to fail');
  }, VM_TEST_MS);

  it('the stage passes demo_1.0.raw and puts portablectl inspect in its details', async () => {
    const ctx: StageContext = { image: demo, imageName: 'demo_1.0.raw', opts: opts(), scope };
    const t = Date.now();
    const out = await portableStage.run(ctx);
    console.log(`portable stage wall time: ${Date.now() - t} ms (${String(out.details?.where)})`);
    expect(out.findings).toEqual([]);
    expect(out.status).toBe('passed');
    expect(out.details?.inspect).toMatch(/Unit files:[\s\S]*demo\.service/);
    expect(out.details?.units).toEqual(['demo-daemon.service', 'demo.service']);
    expect(out.details?.unitStates).toMatchObject({ 'demo.service': { active: 'inactive', result: 'success', status: '0' } });
  }, VM_TEST_MS);

  it('sees dead a service that dies soon after its program starts, however long the namespace setup before it took', async () => {
    // Type=simple is active at the fork; in the VM the RootImage= setup before the exec takes longer than the settle time.
    const dying = await portableRaw('dying_1.0', { 'dying.service': '[Service]\nExecStart=/usr/bin/busybox sh -c "sleep 0.5; echo dying now; exit 3"\n' });
    const r = await checkPortable([{ path: dying, name: 'dying_1.0.raw', units: ['dying.service'] }], { scope, timeoutMs: 300_000, where: 'vm' });
    expect(r.vmError).toBeUndefined();
    const [c] = r.checks!;
    expect(c.units[0].props).toMatchObject({ ActiveState: 'failed', ExecMainStatus: '3' });
    expect(c.units[0].journal.join('\n')).toContain('dying now');
    expect(judgePortable(c).map((f) => f.code)).toEqual(['portable-service-failed']);
  }, VM_TEST_MS);

  it('the stage does not apply when no unit matches the prefix, without booting anything', async () => {
    const t = Date.now();
    const out = await portableStage.run({ image: notPortable, imageName: 'other_1.0.raw', opts: opts(), scope });
    console.log(`portable stage, not applicable: ${Date.now() - t} ms`);
    expect(out).toMatchObject({ status: 'skipped', skippedBy: 'not-applicable' });
    expect(out.reason).toMatch(/prefix 'other'/);
    // Nothing ran: a check on the host or in a VM would say where, and a VM run its accelerator.
    expect(out.details?.prefix).toBe('other');
    expect(out.details?.where).toBeUndefined();
    expect(out.details?.vm).toBeUndefined();
  });
});
