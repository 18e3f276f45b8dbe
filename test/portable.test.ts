// The portable stage. Pure tests of the job script, the result parser and
// the judgement; then real runs: busybox portable-service images attached
// with portablectl (in the VM here and in CI, where systemd is not PID 1).
// One VM boot checks two images at once (a good one and one whose service
// exits 1); one more runs the stage end to end. Nothing is skipped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { Scope } from '../src/cleanup.js';
import { readInput } from '../src/input/index.js';
import { buildRawImage } from '../src/build/index.js';
import { ensureVmImage } from '../src/vm/image.js';
import type { StageContext, VerifyOptions } from '../src/stages/context.js';
import {
  buildPortableJob,
  checkPortable,
  isStartable,
  judgePortable,
  parsePortableResults,
  portableStage,
  unitOk,
  type PortableImage,
  type UnitCheck,
} from '../src/stages/portable.js';

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
  await copyFile('/usr/bin/busybox', join(root, 'usr/bin/busybox'));
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
  const job = buildPortableJob(images, ['/dev/disk/by-id/virtio-pi-img-0', "/h/it's.raw"]);

  it('copies each image to /var/tmp/NAME.raw, inspects and attaches it at runtime', () => {
    expect(job).toContain("cp --sparse=always /dev/disk/by-id/virtio-pi-img-0 \"$f\"");
    expect(job).toContain(`cp --sparse=always '/h/it'\\''s.raw' "$f"`);
    expect(job).toContain('f=/var/tmp/demo_1.0.raw');
    expect(job).toContain('$PCTL inspect "$f"');
    expect(job).toContain('$PCTL attach --runtime "$f"');
  });

  it('starts the startable units, then stops them before detaching', () => {
    expect(job).toContain('systemctl start demo.service');
    expect(job).toContain('systemctl start demo-x.socket');
    expect(job).not.toContain('systemctl start demo@.service');
    expect(job.indexOf('systemctl stop demo.service demo-x.socket')).toBeLessThan(job.indexOf('detach --runtime /var/tmp/demo_1.0.raw'));
    expect(isStartable('demo@.service')).toBe(false);
    expect(isStartable('demo@one.service')).toBe(true);
    expect(isStartable('demo.mount')).toBe(false);
  });

  it('is valid sh', async () => {
    const { run } = await import('../src/exec.js');
    await run('sh', ['-n', '-c', job]);
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
      { scope, timeoutMs: 300_000, where: 'vm' },
    );
    console.log(`portable check of 2 images in one VM run (${r.vm?.accel}): ${r.durationMs} ms`);
    expect(r.vmError).toBeUndefined();
    const [good, failing] = r.checks!;
    expect(good.attachExit).toBe(0);
    expect(good.list).toMatch(/demo_1\.0\s.*attached-runtime/);
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

  it('the stage does not apply when no unit matches the prefix, without booting anything', async () => {
    const t = Date.now();
    const out = await portableStage.run({ image: notPortable, imageName: 'other_1.0.raw', opts: opts(), scope });
    expect(out).toMatchObject({ status: 'skipped', skippedBy: 'not-applicable' });
    expect(out.reason).toMatch(/prefix 'other'/);
    expect(Date.now() - t).toBeLessThan(10_000);
  });
});
