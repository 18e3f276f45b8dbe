// The boot-diagnosis corpus (issue 14): real broken images, each built from
// the cached Debian root or a busybox tree and broken one way, run through
// `part-image boot` as a user would. Each case asserts the exact cause code,
// the path it names, the report's cause line, and that the stage that named
// it did so far below the boot timeout (a correctness bound: it did not wait
// for the timeout; speed is for `npm run bench`). The healthy controls must
// be accepted. Needs root and systemd-nspawn (the host path): fails loudly
// without them.
import { lstat, mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasTool } from '../src/exec.js';
import type { Report, StageResult } from '../src/types.js';
import { runCli } from './helpers/cli.js';
import { debianRootTar } from './helpers/debian-root.js';
import { skipAllBut } from './helpers/stages.js';
import { extractDebianRoot, makeBusyboxTree, makeImage } from './fixtures/boot/images.js';

const tmp = await mkdtemp(join(tmpdir(), 'part-image-corpus-'));
const root = join(tmp, 'root');
const aside = join(tmp, 'aside');
afterAll(() => rm(tmp, { recursive: true, force: true }));
const BOOT_TIMEOUT_MS = 120_000;

beforeAll(async () => {
  expect(process.getuid?.(), 'the corpus boots images: it needs root').toBe(0);
  expect(await hasTool('systemd-nspawn'), 'the corpus needs systemd-nspawn (apt-get install systemd-container)').toBe(true);
  await extractDebianRoot(root);
  await mkdir(aside);
});

/** Build an image of the Debian root with `edit` applied, then undo it. */
async function debianImage(name: string, edit: (r: string) => Promise<() => Promise<void>>): Promise<string> {
  const image = join(tmp, name);
  const undo = await edit(root);
  try {
    await makeImage(root, image, 512);
  } finally {
    await undo();
  }
  return image;
}

/** Moves `path` of the root aside; returns the undo. */
async function moveAside(r: string, path: string): Promise<() => Promise<void>> {
  const to = join(aside, path.replace(/\//g, '_'));
  await rename(join(r, path), to);
  return () => rename(to, join(r, path));
}

/** Puts `make` in place of `path` (moved aside when it is there), for a case that replaces something. */
async function replace(r: string, path: string, make: (p: string) => Promise<void>): Promise<() => Promise<void>> {
  const there = await lstat(join(r, path)).then(() => true, () => false);
  const back = there ? await moveAside(r, path) : async () => undefined;
  await make(join(r, path));
  return async () => {
    await rm(join(r, path), { recursive: true, force: true });
    await back();
  };
}

async function addFile(r: string, path: string, body: string, link?: string): Promise<() => Promise<void>> {
  await writeFile(join(r, path), body);
  if (link) await symlink(link.split(' -> ')[1], join(r, link.split(' -> ')[0]));
  return async () => {
    await rm(join(r, path));
    if (link) await rm(join(r, link.split(' -> ')[0]));
  };
}

interface Boot {
  exitCode: number;
  report: Report;
  stdout: string;
  stage: (name: string) => StageResult;
}

async function boot(image: string, ...args: string[]): Promise<Boot> {
  const json = `${image}.report.json`;
  const r = await runCli(['boot', image, '--report-json', json, ...args]);
  const report = JSON.parse(await readFile(json, 'utf8')) as Report;
  const stage = (name: string) => {
    const s = report.stages.find((x) => x.name === name);
    expect(s, `stage ${name} in ${JSON.stringify(report.stages.map((x) => x.name))}`).toBeDefined();
    return s!;
  };
  return { exitCode: r.exitCode, report, stdout: r.stdout, stage };
}

const codes = (s: StageResult) => s.findings.map((f) => [f.code, f.path]);

describe('corpus: root images that do not boot', () => {
  it('default.target links to a missing target: named rootless, and nspawn stops on "Falling back to rescue.target"', async () => {
    const image = await debianImage('default-target-missing.img', (r) =>
      replace(r, 'etc/systemd/system/default.target', (p) => symlink('/lib/systemd/system/nosuch.target', p)),
    );
    const b = await boot(image, '--nspawn');
    expect(b.exitCode).toBe(1);
    expect(codes(b.stage('diagnose'))).toEqual([['default-target-missing', '/etc/systemd/system/default.target']]);
    expect(b.report.cause).toMatch(/^default\.target does not resolve \(\/etc\/systemd\/system\/default\.target -> \/lib\/systemd\/system\/nosuch\.target; no nosuch\.target in any unit folder\)/);
    const n = b.stage('nspawn');
    expect(codes(n)).toEqual([['rescue-mode', 'default.target']]);
    expect(n.findings[0].message).toContain('"Unit default.target not found.", then "Falling back to rescue.target."');
    expect(n.details).toMatchObject({ stoppedBy: 'console', timedOut: false });
    expect(n.durationMs).toBeLessThan(BOOT_TIMEOUT_MS / 2);
  });

  it('default.target masked (-> /dev/null): named rootless and on the console', async () => {
    const image = await debianImage('default-target-masked.img', (r) =>
      replace(r, 'etc/systemd/system/default.target', (p) => symlink('/dev/null', p)),
    );
    const b = await boot(image, '--nspawn');
    expect(codes(b.stage('diagnose'))).toEqual([['default-target-masked', '/etc/systemd/system/default.target']]);
    const n = b.stage('nspawn');
    expect(codes(n)).toEqual([['rescue-mode', 'default.target']]);
    expect(n.findings[0].message).toContain('Unit default.target is masked.');
    expect(n.durationMs).toBeLessThan(BOOT_TIMEOUT_MS / 2);
  });

  it('/usr/bin/sh dangling (dash removed): no-shell, and nspawn does not boot a probe that cannot run', async () => {
    const image = await debianImage('sh-dangling.img', (r) => moveAside(r, 'usr/bin/dash'));
    const b = await boot(image, '--nspawn');
    expect(codes(b.stage('diagnose'))).toEqual([['no-shell', '/bin/sh']]);
    expect(b.report.cause).toBe('/bin/sh is a dangling symlink (/bin -> usr/bin, /usr/bin/sh -> dash; /usr/bin/dash does not exist): the boot probe, and most units, need it; install a shell in the root tree (Debian: dash, or bash\'s /usr/bin/sh link)');
    const n = b.stage('nspawn');
    expect(codes(n)).toEqual([['no-shell', '/bin/sh']]);
    expect(n.details).toMatchObject({ booted: false });
    expect(n.durationMs).toBeLessThan(BOOT_TIMEOUT_MS / 2);
  });

  it('/bin a real empty directory where the usr-merge link belongs: broken-usr-merge first', async () => {
    const image = await debianImage('bin-real-dir.img', (r) => replace(r, 'bin', (p) => mkdir(p)));
    const b = await boot(image, '--nspawn');
    const d = b.stage('diagnose');
    expect(d.findings[0]).toMatchObject({ code: 'broken-usr-merge', path: '/bin', actual: 'an empty directory' });
    expect(d.findings.map((f) => f.code)).toContain('no-shell');
    expect(b.report.cause).toMatch(/^broken usr-merge: \/bin is an empty directory, not a link to usr\/bin/);
    expect(b.stage('nspawn').durationMs).toBeLessThan(BOOT_TIMEOUT_MS / 2);
  });

  it('/sbin a real empty directory: broken-usr-merge, and the no-/sbin/init warning', async () => {
    const image = await debianImage('sbin-real-dir.img', (r) => replace(r, 'sbin', (p) => mkdir(p)));
    const b = await boot(image, '--nspawn', '--boot-stall', '20s');
    const d = b.stage('diagnose');
    expect(d.findings[0]).toMatchObject({ code: 'broken-usr-merge', path: '/sbin' });
    expect(b.report.cause).toMatch(/^broken usr-merge: \/sbin is an empty directory, not a link to usr\/sbin/);
    expect(d.warnings?.map((w) => w.code)).toEqual(['no-sbin-init']);
    expect(b.stage('nspawn').durationMs).toBeLessThan(BOOT_TIMEOUT_MS / 2);
  });

  it('/bin/sh -> bash with libtinfo gone: missing-library for /bin/sh, and the probe-less boot ends on the stall, not the timeout', async () => {
    const image = await debianImage('sh-missing-lib.img', async (r) => {
      const sh = await replace(r, 'usr/bin/sh', (p) => symlink('bash', p));
      const lib = await moveAside(r, 'usr/lib/x86_64-linux-gnu/libtinfo.so.6.4');
      return async () => {
        await lib();
        await sh();
      };
    });
    const b = await boot(image, '--nspawn', '--boot-stall', '15s');
    expect(b.stage('diagnose').findings).toMatchObject([{ code: 'missing-library', expected: 'libtinfo.so.6', path: '/usr/bin/bash' }]);
    expect(b.report.cause).toMatch(/^missing library: libtinfo\.so\.6, needed by \/usr\/bin\/bash/);
    const n = b.stage('nspawn');
    expect(n.findings.map((f) => f.code)).toContain('boot-timeout');
    expect(n.findings.find((f) => f.code === 'boot-timeout')?.message).toMatch(/^the boot stalled: no boot job changed for 1\d s/);
    expect(n.details).toMatchObject({ stoppedBy: 'stall', timedOut: false });
    expect(n.durationMs).toBeLessThan(BOOT_TIMEOUT_MS / 2);
  });

  it("a unit in the boot whose ExecStart= binary is gone: unit-exec-missing, rootless", async () => {
    const image = await debianImage('unit-exec-missing.img', (r) =>
      addFile(
        r,
        'etc/systemd/system/nosuch.service',
        '[Unit]\nDescription=A daemon whose binary is gone\n[Service]\nExecStart=/usr/sbin/nosuch-daemon --foreground\n[Install]\nWantedBy=multi-user.target\n',
        'etc/systemd/system/multi-user.target.wants/nosuch.service -> ../nosuch.service',
      ),
    );
    const b = await boot(image, '--nspawn');
    const d = b.stage('diagnose');
    expect(codes(d)).toEqual([['unit-exec-missing', '/etc/systemd/system/nosuch.service']]);
    expect(d.findings[0]).toMatchObject({ expected: '/usr/sbin/nosuch-daemon' });
    expect(b.report.cause).toMatch(/^nosuch\.service \(A daemon whose binary is gone\) is pulled in by the default target, but its ExecStart= program \/usr\/sbin\/nosuch-daemon is not in the image/);
    // Allowed to fail: no finding from either stage.
    const allowed = await boot(image, '--nspawn', '--allow-failed-unit', 'nosuch');
    expect(allowed.stage('diagnose').findings).toEqual([]);
    expect(allowed.exitCode).toBe(0);
  });

  it('a unit that hangs: named by the stall (no job change), far below the boot timeout', async () => {
    const image = await debianImage('hang.img', (r) =>
      addFile(
        r,
        'etc/systemd/system/hang.service',
        '[Unit]\nDescription=A unit that never finishes starting\n[Service]\nType=oneshot\nExecStart=/bin/sh -c "echo hang-unit-starts; exec sleep infinity"\nTimeoutStartSec=infinity\n[Install]\nWantedBy=multi-user.target\n',
        'etc/systemd/system/multi-user.target.wants/hang.service -> ../hang.service',
      ),
    );
    const b = await boot(image, '--nspawn', '--boot-stall', '15s');
    const n = b.stage('nspawn');
    const t = n.findings.find((f) => f.code === 'boot-timeout');
    expect(t?.path, `nspawn findings: ${JSON.stringify(n.findings)}; details: ${JSON.stringify(n.details)}`).toBe('hang.service');
    expect(t?.message).toMatch(/^the boot stalled: no boot job changed for 1\d s \(stopped after \d+ s\); still running: hang\.service \(start\)/);
    expect(b.report.cause).toBe(t?.message);
    expect(n.details).toMatchObject({ stoppedBy: 'stall', timedOut: false });
    expect(n.durationMs).toBeLessThan(BOOT_TIMEOUT_MS / 2);
  });

  it('a required mount that fails: emergency mode, named with the failed unit', async () => {
    const image = await debianImage('emergency.img', async (r) => {
      await mkdir(join(r, 'etc/systemd/system/local-fs.target.requires'));
      await mkdir(join(r, 'srv/bad'));
      const undo = await addFile(
        r,
        'etc/systemd/system/srv-bad.mount',
        '[Unit]\nDescription=A mount that fails\n[Mount]\nWhat=none\nWhere=/srv/bad\nType=nosuchfs\n',
        'etc/systemd/system/local-fs.target.requires/srv-bad.mount -> ../srv-bad.mount',
      );
      return async () => {
        await undo();
        await rm(join(r, 'etc/systemd/system/local-fs.target.requires'), { recursive: true });
        await rm(join(r, 'srv/bad'), { recursive: true });
      };
    });
    const b = await boot(image, '--nspawn');
    const n = b.stage('nspawn');
    expect(n.findings.map((f) => f.code)).toContain('emergency-mode');
    expect(n.findings.find((f) => f.code === 'unit-failed')?.path).toBe('srv-bad.mount');
    expect(b.report.cause).toMatch(/^unit srv-bad\.mount failed/);
    expect(n.durationMs).toBeLessThan(BOOT_TIMEOUT_MS / 2);
  });

  it('a read-write root with 1-2 MiB free: root-full; --allow-full accepts it', async () => {
    const tar = await debianRootTar();
    const probe = join(tmp, 'probe-size.img');
    const skip = skipAllBut('freespace');
    const first = await runCli(['build', '--input', tar, '--output', probe, '--free-mb', '0', '--allow-full', '--report-json', `${probe}.json`, ...skip]);
    expect(first.exitCode, first.stderr).toBe(0);
    const fs = (JSON.parse(await readFile(`${probe}.json`, 'utf8')) as Report).stages.find((s) => s.name === 'freespace')!;
    const size = Number(fs.details!.sizeMb) - Math.floor(Number(fs.details!.freeMb)) + 1;
    const image = join(tmp, 'full.img');
    const full = await runCli(['build', '--input', tar, '--output', image, '--size-mb', String(size), '--report-json', `${image}.json`, ...skip]);
    const report = JSON.parse(await readFile(`${image}.json`, 'utf8')) as Report;
    const f = report.stages.find((s) => s.name === 'freespace')!;
    expect(Number(f.details!.freeMb)).toBeLessThan(3);
    expect(full.exitCode).toBe(1);
    expect(f.findings.map((x) => x.code)).toEqual(['root-full']);
    expect(report.cause).toMatch(/^the root filesystem is all but full: \d+(\.\d)? MiB free \(under 16 MiB\); a read-write boot fails to write \/etc\/machine-id/);
    const allowed = await runCli(['build', '--input', tar, '--output', join(tmp, 'full-allowed.img'), '--size-mb', String(size), '--allow-full', ...skip]);
    expect(allowed.exitCode, allowed.stdout).toBe(0);
  });
});

describe('corpus: portable images that portabled would refuse (rootless, before the VM)', () => {
  async function portable(name: string, edit: (r: string) => Promise<void>): Promise<string> {
    const tree = join(tmp, `${name}.tree`);
    await makeBusyboxTree(tree);
    await writeFile(join(tree, 'usr/lib/systemd/system/demo.service'), '[Unit]\nDescription=demo\n[Service]\nExecStart=/usr/bin/busybox sh -c "echo demo; sleep 3600"\n');
    await edit(tree);
    await mkdir(join(tmp, name));
    const image = join(tmp, name, 'demo_1.0.raw');
    await makeImage(tree, image, 16);
    return image;
  }
  const lint = async (image: string) => {
    const b = await boot(image, '--skip', 'nspawn,portable');
    const l = b.stage('portable-lint');
    expect(l.durationMs).toBeLessThan(10_000);
    return { b, l };
  };

  it('os-release without ID=', async () => {
    const { b, l } = await lint(await portable('no-id', (t) => writeFile(join(t, 'usr/lib/os-release'), 'NAME="Busybox"\nVERSION_ID=1\n')));
    expect(codes(l)).toEqual([['portable-os-release-no-id', '/usr/lib/os-release']]);
    expect(b.report.cause).toMatch(/^\/usr\/lib\/os-release has no ID= line/);
  });

  it('PORTABLE_PREFIXES= that does not cover the unit', async () => {
    const { l } = await lint(await portable('prefixes', (t) => writeFile(join(t, 'usr/lib/os-release'), 'ID=busybox\nPORTABLE_PREFIXES=other\n')));
    expect(codes(l)).toEqual([['portable-prefixes-mismatch', '/usr/lib/os-release']]);
    expect(l.findings[0]).toMatchObject({ expected: ['other'], actual: ['demo.service'] });
  });

  it('the ExecStart= binary is missing', async () => {
    const { l } = await lint(await portable('exec-missing', (t) => writeFile(join(t, 'usr/lib/systemd/system/demo.service'), '[Service]\nExecStart=/usr/bin/demo-daemon --serve\n')));
    expect(codes(l)).toEqual([['portable-exec-missing', '/usr/lib/systemd/system/demo.service']]);
    expect(l.findings[0].expected).toBe('/usr/bin/demo-daemon');
  });

  it("the ExecStart= binary is there but its loader is not (a dynamic program in a static tree)", async () => {
    const { l } = await lint(await portable('exec-loader', async (t) => {
      await writeFile(join(t, 'usr/bin/demo-daemon'), await readFile('/usr/bin/true'), { mode: 0o755 });
      await writeFile(join(t, 'usr/lib/systemd/system/demo.service'), '[Service]\nExecStart=/usr/bin/demo-daemon\n');
    }));
    // The loader first, then the libraries it would have loaded.
    expect(codes(l)[0]).toEqual(['missing-interpreter', '/usr/bin/demo-daemon']);
    expect(l.findings[0].message).toMatch(/^demo\.service: missing interpreter: \/usr\/bin\/demo-daemon needs the loader \/lib64\/ld-linux-x86-64\.so\.2/);
    expect(l.findings.slice(1)).toMatchObject([{ code: 'missing-library', expected: 'libc.so.6' }]);
  });

  it('a script ExecStart= whose interpreter is missing', async () => {
    const { l } = await lint(await portable('exec-script', async (t) => {
      await writeFile(join(t, 'usr/bin/demo.py'), '#!/usr/bin/python3\nprint("demo")\n', { mode: 0o755 });
      await writeFile(join(t, 'usr/lib/systemd/system/demo.service'), '[Service]\nExecStart=/usr/bin/demo.py\n');
    }));
    expect(codes(l)).toEqual([['missing-interpreter', '/usr/bin/demo.py']]);
    expect(l.findings[0].expected).toBe('/usr/bin/python3');
  });
});

describe('corpus: healthy controls and warnings (accepted)', () => {
  it('the Debian root boots and is accepted, with no finding and no warning', async () => {
    const image = await debianImage('healthy.img', async () => async () => undefined);
    const b = await boot(image, '--nspawn');
    expect(b.exitCode, b.stdout).toBe(0);
    for (const s of b.report.stages) {
      expect(s.findings, s.name).toEqual([]);
      expect(s.warnings ?? [], s.name).toEqual([]);
    }
    expect(b.stage('nspawn').details).toMatchObject({ defaultTargetState: 'active', timedOut: false });
    expect(b.stage('nspawn').details?.stoppedBy).toBeUndefined();
  });

  it('no /sbin/init: accepted, with a warning that a kernel boot would not find init', async () => {
    const image = await debianImage('no-sbin-init.img', (r) => moveAside(r, 'usr/sbin/init'));
    const b = await boot(image, '--nspawn');
    expect(b.exitCode, b.stdout).toBe(0);
    expect(b.stage('diagnose').warnings).toMatchObject([{ code: 'no-sbin-init', path: '/sbin/init' }]);
    expect(b.stdout).toMatch(/warning: \[no-sbin-init\] \/sbin\/init does not resolve: systemd-nspawn finds systemd anyway, but a kernel or VM boot/);
    expect(b.stdout).toMatch(/ACCEPTED \(.*, with 1 warning\)/);
  });

  it('an fstab device that is not the image: accepted, with a warning; a nofail one is no warning', async () => {
    // (A / line is left out: systemd-remount-fs would remount the container's root, a finding of its own.)
    const fstab = [
      'UUID=0badc0de-0000-4000-8000-000000000000 /data ext4 defaults 0 2',
      '/dev/vdb /spare ext4 nofail 0 2',
      'proc /proc proc defaults 0 0',
      'tmpfs /tmp tmpfs defaults 0 0',
    ].join('\n');
    const image = await debianImage('fstab.img', (r) => replace(r, 'etc/fstab', (p) => writeFile(p, `${fstab}\n`)));
    const b = await boot(image, '--nspawn');
    expect(b.exitCode, b.stdout).toBe(0);
    expect(b.stage('diagnose').warnings).toMatchObject([{ code: 'fstab-device-missing', path: '/etc/fstab', field: '/data', actual: 'UUID=0badc0de-0000-4000-8000-000000000000' }]);
    expect(b.stdout).toContain('warning: [fstab-device-missing] /etc/fstab line 1 mounts UUID=0badc0de-0000-4000-8000-000000000000 on /data');
  });

  it('a healthy busybox portable service passes the lint', async () => {
    const tree = join(tmp, 'demo.tree');
    await makeBusyboxTree(tree);
    await writeFile(join(tree, 'usr/lib/systemd/system/demo.service'), '[Service]\nExecStart=/usr/bin/busybox sh -c "echo demo; sleep 3600"\n');
    await mkdir(join(tmp, 'demo'));
    const image = join(tmp, 'demo', 'demo_1.0.raw');
    await makeImage(tree, image, 16);
    const b = await boot(image, '--skip', 'nspawn,portable');
    expect(b.exitCode, b.stdout).toBe(0);
    expect(b.stage('portable-lint')).toMatchObject({ status: 'passed', findings: [] });
  });
});
