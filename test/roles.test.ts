// Image roles end to end through the CLI, with the real tools (nspawn on the
// host as root; the portable attach, which needs the VM, is skipped here and
// covered by test/portable.test.ts): a data partition builds with no --skip
// and the boot stages say why they do not apply; --role root requires them;
// a root with os-release and no init is still rejected; a minimal portable
// service without init passes diagnose (its ExecStart checked) and nspawn
// (the oneshot ExecStart run in exec mode). Also the builder-container env:
// PART_IMAGE_ROLE and PART_IMAGE_REJECTED_DIR.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { isRoot } from './helpers/trees.js';
import { makeBusyboxTree } from './fixtures/boot/images.js';
import { decideRole, parseRole } from '../src/boot/role.js';
import { parseServiceExec } from '../src/stages/portable-exec.js';

let work: string;
const readJson = async (p: string) => JSON.parse(await readFile(p, 'utf8'));
type StageJson = { name: string; status: string; skippedBy?: string; reason?: string; findings: { code: string; message: string }[] };
const stage = (report: { stages: StageJson[] }, name: string) => report.stages.find((s) => s.name === name)!;
const BOOT = ['diagnose', 'nspawn', 'portable-lint', 'portable'];

async function dataTree(dir: string): Promise<void> {
  await mkdir(join(dir, 'EFI/BOOT'), { recursive: true });
  await writeFile(join(dir, 'EFI/BOOT/linux.efi'), Buffer.alloc(64 * 1024, 7));
  await writeFile(join(dir, 'EFI/BOOT/BGENV.DAT'), 'revision=3\n');
}

beforeAll(async () => {
  expect(isRoot, 'the nspawn stage runs on the host as root').toBe(true);
  work = await mkdtemp(join(tmpdir(), 'pi-roles-test-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('role detection (pure)', () => {
  const facts = { osRelease: false, init: false, unitFiles: 0, matchingUnits: 0, portableFlag: false };
  it('data without os-release, init or unit files; portable without init but with matching units; root otherwise', () => {
    expect(decideRole(facts).role).toBe('data');
    expect(decideRole({ ...facts, osRelease: true }).role).toBe('root');
    expect(decideRole({ ...facts, osRelease: true, unitFiles: 1, matchingUnits: 1 }).role).toBe('portable');
    expect(decideRole({ ...facts, osRelease: true, portableFlag: true }).role).toBe('portable');
    expect(decideRole({ ...facts, osRelease: true, init: true, unitFiles: 1, matchingUnits: 1 }).role).toBe('root');
    expect(decideRole({ ...facts, unitFiles: 2 }).role).toBe('root');
    expect(decideRole(facts, 'root')).toEqual({ role: 'root', forced: true, why: '--role root' });
    expect(() => parseRole('boot')).toThrow(/--role must be one of root, portable, data, got "boot"/);
  });
  it("reads a unit's first ExecStart (prefixes dropped) and Type", () => {
    expect(parseServiceExec('a.service', '[Unit]\nExecStart=/no\n[Service]\nType=oneshot\nExecStart=-/usr/bin/busybox sh -c "echo hi there"\nExecStart=/x\n'))
      .toEqual({ unit: 'a.service', type: 'oneshot', command: ['/usr/bin/busybox', 'sh', '-c', 'echo hi there'] });
    expect(parseServiceExec('b.service', '[Service]\n').command).toBeUndefined();
  });
});

describe('data partitions', () => {
  it('build with every stage: the boot stages do not apply and say so, naming --role root', async () => {
    const tree = join(work, 'data');
    await dataTree(tree);
    const json = join(work, 'data.json');
    const r = await runCli(['build', '--input', tree, '--output', join(work, 'data.img'), '--free-mb', '4', '--report-json', json]);
    expect(r.exitCode).toBe(0);
    const report = await readJson(json);
    expect(report.accepted).toBe(true);
    for (const name of BOOT) {
      const s = stage(report, name);
      expect(s).toMatchObject({ status: 'skipped', skippedBy: 'not-applicable' });
      expect(s.reason).toMatch(/does not apply to a data partition \(detected: a data partition: no os-release, no init and no unit file; --role root requires the boot stages\)/);
    }
    expect(r.stdout).toMatch(/ACCEPTED/);
  });

  it('--role root requires the boot stages: the same tree is rejected for no os-release and no init', async () => {
    const tree = join(work, 'data');
    const json = join(work, 'data-root.json');
    const r = await runCli(['build', '--input', tree, '--output', join(work, 'data-root.img'), '--free-mb', '4', '--role', 'root', '--skip', 'portable', '--report-json', json]);
    expect(r.exitCode).toBe(1);
    const codes = stage(await readJson(json), 'diagnose').findings.map((f) => f.code);
    expect(codes).toEqual(expect.arrayContaining(['no-os-release', 'no-init']));
  });

  it('a root with os-release but no init is still rejected (no-init)', async () => {
    const tree = join(work, 'half-root');
    await dataTree(tree);
    await mkdir(join(tree, 'etc'));
    await writeFile(join(tree, 'etc/os-release'), 'ID=half\n');
    const json = join(work, 'half.json');
    const r = await runCli(['build', '--input', tree, '--output', join(work, 'half.img'), '--free-mb', '4', '--skip', 'portable', '--report-json', json]);
    expect(r.exitCode).toBe(1);
    expect(stage(await readJson(json), 'diagnose').findings.map((f) => f.code)).toEqual(['no-init']);
  });
});

describe('portable services need no init', () => {
  const UNIT = '[Unit]\nDescription=hello\n[Service]\nType=oneshot\nExecStart=/usr/bin/busybox sh -c "echo hello from a portable service"\n[Install]\nWantedBy=multi-user.target\n';

  it('hello-portable.raw with --portable: diagnose checks the ExecStart, nspawn runs it in exec mode, no init asked for', async () => {
    const tree = join(work, 'hello');
    await makeBusyboxTree(tree);
    await writeFile(join(tree, 'usr/lib/systemd/system/hello-portable.service'), UNIT);
    const json = join(work, 'hello.json');
    const r = await runCli(['build', '--input', tree, '--output', join(work, 'hello-portable.raw'), '--portable', '--free-mb', '4', '--skip', 'portable', '--report-json', json], { env: { PART_IMAGE_NSPAWN: 'host' } });
    const report = await readJson(json);
    expect(r.stderr).not.toMatch(/no-init|no-boot-command/);
    expect(stage(report, 'diagnose')).toMatchObject({ status: 'passed', findings: [] });
    expect((stage(report, 'diagnose') as unknown as { details: { role: string; units: unknown[] } }).details).toMatchObject({
      role: 'portable', units: [{ unit: 'hello-portable.service', type: 'oneshot', execStart: ['/usr/bin/busybox', 'sh', '-c', 'echo hello from a portable service'] }],
    });
    const ns = stage(report, 'nspawn') as StageJson & { details: { mode: string; command: string[] } };
    expect(ns.status).toBe('passed');
    expect(ns.details).toMatchObject({ mode: 'exec', command: ['/usr/bin/busybox', 'sh', '-c', 'echo hello from a portable service'] });
    expect(stage(report, 'portable-lint').status).toBe('passed');
    expect(r.exitCode).toBe(0);
  });

  it('a unit whose ExecStart binary is not in the image is rejected by diagnose, naming the unit', async () => {
    const tree = join(work, 'broken-svc');
    await makeBusyboxTree(tree);
    await writeFile(join(tree, 'usr/lib/systemd/system/broken-svc.service'), '[Service]\nExecStart=/usr/bin/hello --serve\n');
    const json = join(work, 'broken.json');
    const r = await runCli(['build', '--input', tree, '--output', join(work, 'broken-svc.raw'), '--free-mb', '4', '--skip', 'portable', '--report-json', json]);
    expect(r.exitCode).toBe(1);
    const report = await readJson(json);
    const f = stage(report, 'diagnose').findings;
    expect(f.map((x) => x.code)).toEqual(['command-not-found']);
    expect(f[0].message).toMatch(/^broken-svc.service ExecStart: command not found: \/usr\/bin\/hello is not in the image/);
    expect(stage(report, 'nspawn').reason).toMatch(/does not apply to a portable service without a oneshot unit/);
  });
});

describe('builder-container env', () => {
  async function builderRoot(name: string, fill: (dir: string) => Promise<void>): Promise<string> {
    const root = join(work, name);
    await mkdir(join(root, 'output'), { recursive: true });
    await fill(join(root, 'input'));
    await writeFile(join(root, 'output/disk.img'), '');
    return root;
  }

  it('a data partition builds in the container with the default command (no --skip)', async () => {
    const root = await builderRoot('c-data', dataTree);
    const r = await runCli(['build'], { env: { PART_IMAGE_BUILDER_ROOT: root, FREE_MB: '4' } });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/diagnose .*does not apply to a data partition/);
  });

  it('PART_IMAGE_ROLE forces the role; PART_IMAGE_REJECTED_DIR keeps the rejected image and its report, and the log says where', async () => {
    const root = await builderRoot('c-reject', dataTree);
    const keep = join(work, 'kept');
    const r = await runCli(['build', '--skip', 'portable'], { env: { PART_IMAGE_BUILDER_ROOT: root, FREE_MB: '4', PART_IMAGE_ROLE: 'root', PART_IMAGE_REJECTED_DIR: keep } });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`rejected image kept at ${join(keep, 'disk.img.rejected')}`);
    expect(r.stderr).toContain(`report: ${join(keep, 'disk.img.report.json')}`);
    expect(existsSync(join(keep, 'disk.img.rejected'))).toBe(true);
    expect(existsSync(join(root, 'output/disk.img.rejected'))).toBe(false);
    const report = await readJson(join(keep, 'disk.img.report.json'));
    expect(report).toMatchObject({ accepted: false, image: join(keep, 'disk.img.rejected') });
    const bad = await runCli(['build'], { env: { PART_IMAGE_BUILDER_ROOT: root, PART_IMAGE_ROLE: 'nope' } });
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/PART_IMAGE_ROLE must be one of root, portable, data/);
  });
});
