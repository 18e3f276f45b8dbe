// The fault matrix, part "a bug in part-image is never a verdict": each case
// runs the real CLI on a real tree or image and checks the exit code, the
// message and the host state afterwards (nothing beside the output, nothing
// left in a private TMPDIR). Issue classes: internal errors (exit 4), the
// environment of the output folder (exit 3), out-of-range flags (exit 2),
// the tools' locale, and user strings reaching a root shell script.
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { skipBoot } from '../helpers/stages.js';
import { debugfsWrite } from '../helpers/images.js';
import { Scope } from '../../src/cleanup.js';
import { readInput } from '../../src/input/index.js';
import { buildRawImage } from '../../src/build/index.js';
import { EnvironmentError } from '../../src/errors.js';
import { buildPortableJob } from '../../src/stages/portable.js';
import { lintPortable, portableNameProblem } from '../../src/stages/portable-lint.js';
import { verifyOptions } from '../../src/commands/common.js';
import { parseOptions } from '../../src/commands/args.js';
import { buildImage } from '../../src/pipeline.js';
import { ALL_STAGE_NAMES } from '../../src/stages/index.js';
import { run } from '../../src/exec.js';

let work: string;
let tree: string;
const mounts: string[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-fault-errors-'));
  // Reached by nobody in the permission case: the folders on the way must be searchable.
  await chmod(work, 0o755);
  tree = join(work, 'tree');
  await mkdir(join(tree, 'etc'), { recursive: true });
  await writeFile(join(tree, 'etc/os-release'), 'ID=fault\n');
  await writeFile(join(tree, 'blob'), Buffer.alloc(3 * 1024 * 1024, 0x5a));
  await execa('chmod', ['-R', 'a+rX', tree]);
});

afterAll(async () => {
  for (const m of mounts.reverse()) await execa('umount', [m], { reject: false });
  await rm(work, { recursive: true, force: true });
});

/** A private TMPDIR for one case; the case checks it is empty afterwards. */
async function caseTmp(name: string): Promise<string> {
  const dir = join(work, `tmp-${name}`);
  await mkdir(dir, { mode: 0o1777 });
  await chmod(dir, 0o1777);
  return dir;
}

async function tmpfs(name: string, opts: string): Promise<string> {
  const dir = join(work, name);
  await mkdir(dir);
  await execa('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', dir]);
  mounts.push(dir);
  return dir;
}

async function leftovers(dir: string): Promise<string[]> {
  return existsSync(dir) ? readdir(dir) : [];
}

describe('a bug in part-image is exit 4, with a report that says where, never a verdict', () => {
  for (const stage of ['fsck', 'readback', 'diff']) {
    it(`build: a TypeError in the ${stage} stage`, async () => {
      const out = join(work, `bug-${stage}.img`);
      const json = join(work, `bug-${stage}.json`);
      const junit = join(work, `bug-${stage}.xml`);
      const tmp = await caseTmp(`bug-${stage}`);
      const r = await runCli(['build', ...skipBoot(), '--input', tree, '--output', out, '--free-mb', '4', '--report-json', json, '--junit', junit],
        { env: { PART_IMAGE_TEST_FAULT: stage, TMPDIR: tmp } });
      expect(r.exitCode).toBe(4);
      expect(r.stderr).toContain(`part-image: internal error in the ${stage} stage: TypeError: injected fault`);
      expect(r.stderr).toMatch(/hint: This is a bug in part-image, not a verdict on the image/);
      expect(r.stdout).not.toMatch(/REJECTED|ACCEPTED/);
      expect(r.stdout).toMatch(/NO VERDICT: a bug in part-image stopped the run/);
      const report = JSON.parse(await readFile(json, 'utf8'));
      expect(report.accepted).toBe(false);
      expect(report.error).toMatchObject({ kind: 'internal', exitCode: 4, stage });
      expect(report.error.where).toMatch(/stages\/run\.(ts|js)/);
      expect(report.stages.find((s: { name: string }) => s.name === stage)).toMatchObject({ status: 'error' });
      // The stages after the broken one did not run: no verdict was made up.
      expect(report.stages.at(-1).name).toBe(stage);
      expect(await readFile(junit, 'utf8')).toMatch(new RegExp(`name="${stage}"[^>]*>\\s*<error message="internal error[^"]*" type="internal"`));
      expect(existsSync(out)).toBe(false);
      expect(existsSync(`${out}.rejected`)).toBe(false);
      expect((await readdir(work)).filter((f) => f.startsWith(`.bug-${stage}`))).toEqual([]);
      expect(await leftovers(tmp)).toEqual([]);
    });
  }

  it('verify: a TypeError in the readback stage of a good image is exit 4, not "rejected"', async () => {
    const img = join(work, 'good.img');
    expect((await runCli(['build', '-q', ...skipBoot(), '--input', tree, '--output', img, '--free-mb', '4'])).exitCode).toBe(0);
    const r = await runCli(['verify', img, '--input', tree, ...skipBoot()], { env: { PART_IMAGE_TEST_FAULT: 'readback' } });
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toContain('internal error in the readback stage');
    expect(r.stdout).not.toContain('REJECTED');
  });

  it('a damaged image is still a verdict (exit 1), not a bug', async () => {
    const img = join(work, 'damaged.img');
    expect((await runCli(['build', '-q', ...skipBoot(), '--input', tree, '--output', img, '--free-mb', '4'])).exitCode).toBe(0);
    await debugfsWrite(img, 'sif /blob mode 0100600');
    const r = await runCli(['verify', img, '--input', tree, ...skipBoot()]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toMatch(/REJECTED/);
  });
});

describe('a damaged filesystem is never mounted', () => {
  it('after a failed fsck, nspawn and portable do not run (no loop device, no mount), and say why', async () => {
    const img = join(work, 'nomount.img');
    expect((await runCli(['build', '-q', ...skipBoot(), '--input', tree, '--output', img, '--free-mb', '4'])).exitCode).toBe(0);
    await debugfsWrite(img, 'sif /blob links_count 7');
    const json = join(work, 'nomount.json');
    const r = await runCli(['verify', img, '--input', tree, '--portable', '--report-json', json], { env: { PART_IMAGE_NSPAWN: 'host' } });
    expect(r.exitCode).toBe(1);
    const report = JSON.parse(await readFile(json, 'utf8'));
    for (const name of ['nspawn', 'portable']) {
      expect(report.stages.find((s: { name: string }) => s.name === name)).toMatchObject({
        status: 'skipped', skippedBy: 'not-applicable', reason: 'not run: the fsck stage failed, and a damaged filesystem is never mounted',
      });
    }
    expect((await execa('losetup', ['-j', img])).stdout).toBe('');
  });
});

describe('the output folder: named when it is read-only, full or not ours (exit 3)', () => {
  it('a read-only filesystem', async () => {
    const ro = await tmpfs('ro', 'size=64m,ro');
    const r = await runCli(['build', ...skipBoot(), '--input', tree, '--output', join(ro, 'x.img'), '--free-mb', '4']);
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toContain(`cannot write the image into ${ro}: it is on a read-only filesystem`);
    expect(r.stderr).not.toMatch(/mke2fs|command failed/);
  });

  it('a full filesystem, before any work: the space needed and the space free', async () => {
    const full = await tmpfs('full', 'size=4m');
    const r = await runCli(['build', ...skipBoot(), '--input', tree, '--output', join(full, 'x.img'), '--free-mb', '4']);
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toMatch(new RegExp(`not enough space in ${full}: the image needs about \\d+ MiB on disk there and only [0-4] MiB are free`));
    expect(r.stderr).not.toMatch(/does not fit|could not size/);
    expect(await leftovers(full)).toEqual([]);
  });

  it('a filesystem that fills up while debugfs writes the tree (the build step itself)', async () => {
    const full = await tmpfs('fills', 'size=2m');
    const scope = new Scope();
    try {
      const t = await readInput(tree, scope);
      const err = await buildRawImage(t, join(full, 'x.img'), { usedMb: 3, freeMb: 4, label: 'root' }, scope).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(EnvironmentError);
      expect((err as Error).message).toMatch(new RegExp(`not enough space in ${full}: the image needs about \\d+ MiB`));
    } finally {
      await scope.close();
    }
  });

  it('--update-golden into a read-only folder fails before any work, not after the image was accepted', async () => {
    const ro = await tmpfs('golden-ro', 'size=4m,ro');
    const out = join(work, 'golden-ro.img');
    const r = await runCli(['build', ...skipBoot(), '--input', tree, '--output', out, '--free-mb', '4', '--golden', join(ro, 'g.json'), '--update-golden']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`--golden ${join(ro, 'g.json')}: its folder does not exist or is not writable`);
    expect(existsSync(out)).toBe(false);
  });

  it('a folder this user may not write to', async () => {
    const locked = join(work, 'locked');
    await mkdir(locked, { mode: 0o555 });
    await chmod(locked, 0o555);
    // Root may write anywhere: the build runs with the effective uid of nobody,
    // in-process (the checkout may sit in a folder nobody cannot enter).
    expect(typeof process.seteuid, 'vitest must run this file in a forked process').toBe('function');
    const req = {
      input: tree, output: join(locked, 'x.img'), format: 'raw' as const, label: 'root', freeMb: '4',
      verify: verifyOptions({ skip: skipBoot()[1].split(',') }, ALL_STAGE_NAMES), env: {},
    };
    process.seteuid!(65534);
    let err: unknown;
    try {
      err = await buildImage(req).then(() => undefined, (e: unknown) => e);
    } finally {
      process.seteuid!(0);
    }
    expect(err).toBeInstanceOf(EnvironmentError);
    expect((err as Error).message).toBe(`cannot write the image into ${locked}: permission denied (EACCES) for uid 65534`);
    expect(await leftovers(locked)).toEqual([]);
  });
});

describe('flags out of range are usage errors that name the valid range (exit 2)', () => {
  const cases: [string[], RegExp][] = [
    [['--size-mb', '-5'], /--size-mb must be a whole number of MiB, got -5; valid: 2 to 16777215 \(16 TiB/],
    [['--size-mb=-5'], /--size-mb must be a whole number of MiB, got -5; valid: 2 to 16777215/],
    [['--size-mb', '99999999999'], /--size-mb must be a whole number of MiB, got 99999999999; valid: 2 to 16777215/],
    [['--size-mb', '1'], /got 1; valid: 2 to/],
    [['--size-mb', '1.5'], /whole number of MiB/],
    [['--free-mb', '-1'], /--free-mb must be a whole number of MiB, got -1; valid: 0 to/],
    [['--used-mb', '1e9'], /--used-mb must be a whole number/],
    [['--label', 'seventeen-bytes-x'], /--label "seventeen-bytes-x" is 17 bytes; an ext4 label holds at most 16 bytes/],
    [['--label', 'ünïcödé-läbel'], /is 1[6-9] bytes|is 2\d bytes/],
    [['--label', 'a\nb'], /contains a control character/],
  ];
  for (const [flags, message] of cases) {
    it(`${JSON.stringify(flags)}`, async () => {
      const out = join(work, 'range.img');
      const r = await runCli(['build', ...skipBoot(), '--input', tree, '--output', out, ...flags]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toMatch(/ambiguous|mke2fs|internal error/);
      expect(existsSync(out)).toBe(false);
    });
  }

  it('SIZE_MB from the environment gets the same check', async () => {
    const r = await runCli(['build', ...skipBoot(), '--input', tree, '--output', join(work, 'env.img')], { env: { SIZE_MB: '-3' } });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/SIZE_MB must be a whole number of MiB, got -3; valid: 2 to/);
  });

  it('a label of exactly 16 bytes is kept whole', async () => {
    const out = join(work, 'label16.img');
    const r = await runCli(['build', '-q', ...skipBoot(), '--input', tree, '--output', out, '--free-mb', '4', '--label', 'sixteen-bytes-xy']);
    expect(r.exitCode).toBe(0);
    expect((await execa('e2label', [out])).stdout.trim()).toBe('sixteen-bytes-xy');
  });

  it('a value starting with "-" is taken as the value unless it is an option of the command (pure)', () => {
    const opts = { 'size-mb': { type: 'string' as const }, output: { type: 'string' as const }, format: { type: 'string' as const }, quiet: { type: 'boolean' as const, short: 'q' } };
    // (joinDashValues, which prepared argv for node's parseArgs, is now part of commands/args.ts's parser.)
    expect(parseOptions('t', ['--size-mb', '-5', 'x'], opts)).toEqual({ values: { 'size-mb': '-5' }, positionals: ['x'] });
    expect(() => parseOptions('t', ['--output', '--format', 'qcow2'], opts)).toThrow(/--output needs a value, but the next argument is the option --format/);
    expect(() => parseOptions('t', ['--output', '-q'], opts)).toThrow(/--output needs a value, but the next argument is the option -q/);
    expect(() => parseOptions('t', ['--quiet', '-5'], opts)).toThrow(/unknown option -5 \(a value that starts with "-" goes right after its option/);
    expect(parseOptions('t', ['--', '--size-mb', '-5'], opts)).toEqual({ values: {}, positionals: ['--size-mb', '-5'] });
  });
});

describe('every host tool runs in one fixed locale', () => {
  const german = { LC_ALL: 'de_DE.UTF-8', LANG: 'de_DE.UTF-8', LANGUAGE: 'de' };

  it('the German locale really translates e2fsck here (else the next case would prove nothing)', async () => {
    const img = join(work, 'locale-probe.img');
    await execa('mke2fs', ['-q', '-F', '-t', 'ext4', img, '8M']);
    const direct = await execa('e2fsck', ['-fn', img], { env: german, reject: false });
    expect(direct.stdout).toMatch(/Durchgang 1/);
  });

  it('run() gives every child LC_ALL=C.UTF-8 whatever the user has', async () => {
    const saved = { ...process.env };
    Object.assign(process.env, german);
    try {
      const r = await run('sh', ['-c', 'printf "%s|%s" "$LC_ALL" "$LANGUAGE"']);
      expect(r.stdout).toBe('C.UTF-8|');
    } finally {
      for (const k of Object.keys(german)) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    }
  });

  it('verify under a German locale parses e2fsck: a damaged image is rejected with e2fsck\'s English words', async () => {
    const img = join(work, 'locale.img');
    expect((await runCli(['build', '-q', ...skipBoot(), '--input', tree, '--output', img, '--free-mb', '4'])).exitCode).toBe(0);
    await debugfsWrite(img, 'sif /blob links_count 7');
    const r = await runCli(['verify', img, '--input', tree, ...skipBoot(), '--report-json', join(work, 'locale.json')], { env: german });
    expect(r.exitCode).toBe(1);
    const report = JSON.parse(await readFile(join(work, 'locale.json'), 'utf8'));
    const fsck = report.stages.find((s: { name: string }) => s.name === 'fsck');
    expect(fsck.status).toBe('failed');
    const text = fsck.findings.map((f: { message: string }) => f.message).join('\n');
    expect(text).toMatch(/Inode \d+ ref count is 7, should be 1/);
    expect(text).not.toMatch(/Durchgang|Referenzzähler/);
    expect(fsck.details.summary).toMatch(/files/);
  });
});

describe('no user string reaches a root shell script', () => {
  it('portable image names: systemd\'s rules, checked once', () => {
    expect(portableNameProblem('demo_1.0.raw')).toBeUndefined();
    expect(portableNameProblem('de\nmo_1.raw')).toMatch(/control character/);
    expect(portableNameProblem('.#demo.raw')).toMatch(/temporary/);
    expect(portableNameProblem('x'.repeat(256))).toMatch(/255/);
    const dir = (path: string) => ({ path, type: 'dir' as const, mode: '0755', uid: 0, gid: 0 });
    const file = (path: string) => ({ path, type: 'file' as const, mode: '0644', uid: 0, gid: 0 });
    const entries = [dir('/'), dir('/etc'), file('/etc/os-release'), dir('/usr'), dir('/usr/lib'), dir('/usr/lib/systemd'), dir('/usr/lib/systemd/system'),
      file('/usr/lib/systemd/system/de\nmo.service'), file('/usr/lib/systemd/system/de$(x).service')];
    const lint = lintPortable({ entries }, 'de\nmo_1.raw', true);
    const codes = lint.findings.map((f) => f.code);
    expect(codes).toContain('portable-bad-name');
    expect(codes).toContain('portable-bad-unit-name');
  });

  it('the portable job runs a hostile (but valid) image name as data: nothing it says is executed', async () => {
    const dir = join(work, 'inject');
    const bin = join(dir, 'bin');
    const out = join(dir, 'out');
    const data = join(dir, 'data');
    await mkdir(bin, { recursive: true });
    await mkdir(out);
    await mkdir(data);
    // Relative: an image name cannot hold "/"; the job runs in `dir`.
    const marker = join(dir, 'INJECTED');
    const hostile = 'x$(touch INJECTED)`touch INJECTED`\';touch INJECTED;\'"_1.raw';
    expect(portableNameProblem(hostile)).toBeUndefined();
    // Recording stand-ins for portablectl and systemctl: the test is about the script, not about them.
    const recorder = `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done >> ${join(dir, 'argv')}\nexit 0\n`;
    for (const tool of ['portablectl', 'systemctl', 'journalctl']) {
      await writeFile(join(bin, tool), recorder);
      await chmod(join(bin, tool), 0o755);
    }
    const src = join(dir, 'src.raw');
    await writeFile(src, 'image bytes');
    const job = buildPortableJob([{ path: src, name: hostile, units: ['x.service'] }], [{ path: `/var/tmp/${hostile}`, copyFrom: src }]);
    expect(job.script).not.toContain('INJECTED');
    await writeFile(join(dir, 'job.sh'), job.script);
    for (const [name, value] of Object.entries(job.data)) await writeFile(join(data, name), value);
    // /var/tmp is where the job copies images: use a private one through a mount namespace.
    const r = await execa('unshare', ['-m', 'sh', '-c', `mount -t tmpfs tmpfs /var/tmp && PATH=${bin}:$PATH PI_OUT=${out} PI_DATA=${data} sh ${join(dir, 'job.sh')}`], { reject: false, cwd: dir });
    expect(r.stderr).toBe('');
    expect(existsSync(marker)).toBe(false);
    const argv = (await readFile(join(dir, 'argv'), 'utf8')).split('\n');
    expect(argv).toContain(`/var/tmp/${hostile}`);
    expect(argv).toContain('x.service');
  });
});
