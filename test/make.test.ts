// `part-image make` end to end with the real tools: Raptor.toml runs built
// and verified like `part-image build`, qcow2 output checked with qemu-img,
// several inputs merged as layers, %groups, per-run reports, exit codes; and
// Raptor's make CLI: -n plans (raptor-builders' tests/Raptor.toml verbatim),
// -L links, up-to-date runs skipped, Raptor-target inputs left to Raptor.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { utimes } from 'node:fs/promises';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipBoot } from './helpers/stages.js';
import { runCli } from './helpers/cli.js';
import { makeSampleTree } from './helpers/trees.js';
import { sniffFile } from '../src/source/load.js';

// The boot stages need an init in the tree; these tests are about make.
const SKIP = skipBoot();

let work: string;
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** A Raptor.toml as the seed builder's page writes it, with a second run that merges two layers to qcow2. */
function raptorToml(out: string): string {
  return `[raptor.link]
rbuild = "raptor-builders"

[run.part1]
target = "$rbuild.part-image" # <-- builder is specified here
input = "tree"
output = "${out}/part.img"
env.FREE_MB = "8"

[run.q]
target = "$rbuild.part-image"
cache = "cache2"
input = ["base", "app"]
output = "${out}/part.qcow2"
env.OUTPUT_FORMAT = "qcow2"
env.SIZE_MB = "24"

[run.disk]
target = "$rbuild.disk-image"
input = ["tree"]
output = "${out}/disk.img"

[group.images]
run = ["part1", "q"]
`;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-make-test-'));
  await makeSampleTree(join(work, 'tree'));
  await mkdir(join(work, 'base/etc'), { recursive: true });
  await writeFile(join(work, 'base/etc/os-release'), 'ID=base\n');
  await writeFile(join(work, 'base/etc/motd'), 'from base\n');
  await writeFile(join(work, 'base/gone'), 'removed by the app layer\n');
  await mkdir(join(work, 'app/etc'), { recursive: true });
  await writeFile(join(work, 'app/etc/motd'), 'from app\n');
  await writeFile(join(work, 'app/.wh.gone'), '');
  await writeFile(join(work, 'Raptor.toml'), raptorToml('out'));
  await writeFile(join(work, 'test.rapt'), 'FROM docker://debian:bookworm\n');
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const readJson = async (p: string) => JSON.parse(await readFile(p, 'utf8'));

describe('part-image make', () => {
  it('builds every part-image run (raw, and qcow2 from two merged layers), leaves other builders alone, one report per run', async () => {
    const r = await runCli(['make', ...SKIP, '--report-json', 'report.json', '--junit', 'junit.xml'], { cwd: work });
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toMatch(/building run part1 \(1\/2\)/);
    expect(r.stderr).toMatch(/building run q \(2\/2\)/);
    expect(r.stderr).toMatch(/left to raptor make: disk \(builder \$rbuild.disk-image\)/);
    expect(r.stdout).toMatch(/run part1:[\s\S]*ACCEPTED[\s\S]*run q:[\s\S]*ACCEPTED/);
    expect(r.stdout).toMatch(/make: 2 runs\n {2}ACCEPTED {2}part1 .*\n {2}ACCEPTED {2}q /);

    expect(await sniffFile(join(work, 'out/part.img'))).toBe('image');
    expect(existsSync(join(work, 'out/disk.img'))).toBe(false);
    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', join(work, 'out/part.qcow2')])).stdout);
    expect(info.format).toBe('qcow2');
    expect(info['virtual-size']).toBe(24 * 1024 * 1024); // env.SIZE_MB is exact

    const p1 = await readJson(join(work, 'report.part1.json'));
    expect(p1).toMatchObject({ command: 'make part1', accepted: true, input: join(work, 'tree'), output: join(work, 'out/part.img') });
    const free = p1.stages.find((s: { name: string }) => s.name === 'freespace');
    expect(free.details.freeMb).toBeGreaterThanOrEqual(8); // env.FREE_MB = "8"
    expect(free.details.freeMb).toBeLessThan(8 + 8);
    const q = await readJson(join(work, 'report.q.json'));
    expect(q).toMatchObject({ command: 'make q', accepted: true, input: `${join(work, 'base')} + ${join(work, 'app')}` });
    expect(q.stages.find((s: { name: string }) => s.name === 'convert').status).toBe('passed');
    expect(await readFile(join(work, 'junit.q.xml'), 'utf8')).toMatch(/<testcase classname="part-image\.\d+-diff" name="diff"/);
    expect(existsSync(join(work, 'report.json'))).toBe(false);

    // The qcow2 holds the merged view: app's motd over base's, base's os-release, no whited-out file.
    const m = await runCli(['manifest', join(work, 'out/part.qcow2')]);
    expect(m.exitCode).toBe(0);
    const entries = m.stdout.trim().split('\n').filter((l) => l.startsWith('{"path"')).map((l) => JSON.parse(l.replace(/,$/, '')));
    const byPath = new Map(entries.map((e: { path: string }) => [e.path, e]));
    expect(byPath.get('/etc/motd')).toMatchObject({ sha256: sha256('from app\n') });
    expect(byPath.get('/etc/os-release')).toMatchObject({ sha256: sha256('ID=base\n') });
    expect(byPath.has('/gone')).toBe(false);
    expect((await readdir(join(work, 'out'))).filter((f) => f.includes('.part-image-'))).toEqual([]);
  });

  it('runs the named run with -f from another folder: inputs resolve against the Raptor.toml, the output against the current folder, as Raptor', async () => {
    const dir = join(work, 'seed-page');
    const cwd = join(work, 'elsewhere');
    await mkdir(join(dir, 'rootfs/etc'), { recursive: true });
    await mkdir(cwd, { recursive: true });
    await writeFile(join(dir, 'rootfs/etc/hostname'), 'part1\n');
    await writeFile(join(dir, 'Raptor.toml'), '[raptor.link]\nrbuild = "raptor-builders"\n\n[run.part1]\ntarget = "$rbuild.part-image"\ninput = "rootfs"\noutput = "part.img"\nenv.FREE_MB = "4"\n');
    const r = await runCli(['make', 'part1', '-f', join(dir, 'Raptor.toml'), ...SKIP, '--report-json', join(dir, 'r.json')], { cwd });
    expect(r.exitCode).toBe(0);
    expect(await sniffFile(join(cwd, 'part.img'))).toBe('image');
    expect(existsSync(join(dir, 'part.img'))).toBe(false);
    expect((await readJson(join(dir, 'r.json'))).command).toBe('make part1'); // one run: the report path as given
  });

  it('exits 2 for an input that is both a folder and a Raptor target, naming both, and builds nothing', async () => {
    const dir = join(work, 'ambiguous');
    await mkdir(join(dir, 'test/etc'), { recursive: true });
    await writeFile(join(dir, 'test.rapt'), 'FROM docker://debian:bookworm\n');
    await writeFile(join(dir, 'Raptor.toml'), '[raptor.link]\nrbuild = "raptor-builders"\n\n[run.part1]\ntarget = "$rbuild.part-image"\ninput = "test"\noutput = "part.img"\n');
    const r = await runCli(['make', ...SKIP], { cwd: dir });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`input "test" is ambiguous: it is the Raptor target ${join(dir, 'test.rapt')} and the path ${join(dir, 'test')}`);
    expect(existsSync(join(dir, 'part.img'))).toBe(false);
  });

  it('builds the runs of a group', async () => {
    await writeFile(join(work, 'group.toml'), raptorToml('out-group'));
    const r = await runCli(['make', '%images', '--file', 'group.toml', ...SKIP], { cwd: work });
    expect(r.exitCode).toBe(0);
    expect(await sniffFile(join(work, 'out-group/part.img'))).toBe('image');
    expect(await sniffFile(join(work, 'out-group/part.qcow2'))).toBe('qcow2');
  });

  it('plans with -n (and --list), building nothing', async () => {
    await writeFile(join(work, 'list.toml'), raptorToml('out-list'));
    for (const flag of ['-n', '--list']) {
      const r = await runCli(['make', flag, '--file', 'list.toml'], { cwd: work });
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toBe('left to raptor make: disk (builder $rbuild.disk-image): raptor make would run $rbuild.disk-image -I tree -O out-list/disk.img\n' +
        'would build part1: tree -> out-list/part.img (raw FREE_MB=8)\nwould build q: base + app -> out-list/part.qcow2 (qcow2 SIZE_MB=24)');
      expect(existsSync(join(work, 'out-list'))).toBe(false);
    }
  });

  it("plans raptor-builders' tests/Raptor.toml verbatim with -n %all (exit 0): other builders left to raptor make, the part-image run's Raptor target with its command", async () => {
    const fixture = fileURLToPath(new URL('./fixtures/raptor-builders-tests/', import.meta.url));
    const dir = join(work, 'raptor-builders/tests');
    await mkdir(dir, { recursive: true });
    for (const f of ['Raptor.toml', 'test.rapt', 'disk.rapt']) await writeFile(join(dir, f), await readFile(join(fixture, f)));
    const r = await runCli(['make', '-n', '%all'], { cwd: dir });
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    for (const [run, builder] of [['test-deblive', 'deblive'], ['test-disk-image', 'disk-image'], ['test-disk-image-qcow2', 'disk-image'],
      ['test-live-disk-image', 'live-disk-image'], ['test-live-disk-image-qcow2', 'live-disk-image']]) {
      expect(r.stdout).toContain(`left to raptor make: ${run} (builder $rbuild.${builder})`);
    }
    expect(r.stdout).toMatch(/needs Raptor: test-part-image: its input test is a Raptor target, which only Raptor can build/);
    expect(r.stdout).toContain(`cd ${dir} && sudo raptor run -L pib `);
    expect(r.stdout).toContain(` '$pib.part-image' -I test -O ${join(dir, 'output/part.img')}`);
    expect(existsSync(join(dir, 'output'))).toBe(false);
    // As raptor-builders' run-tests calls it: -qb. Building it needs Raptor: exit 2 with the same command.
    const q = await runCli(['make', '-qb', '%all'], { cwd: dir });
    expect(q.exitCode).toBe(2);
    expect(q.stderr).toMatch(/run test-part-image: the input is a Raptor target; part-image cannot build it without Raptor/);
    expect(q.stderr).toContain(` '$pib.part-image' -I test -O ${join(dir, 'output/part.img')}`);
  });

  it('exits 2 when no selected run is a part-image run, naming it as left to raptor make', async () => {
    const r = await runCli(['make', 'disk', ...SKIP], { cwd: work });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/left to raptor make: disk \(builder \$rbuild.disk-image\)/);
    expect(r.stderr).toMatch(/nothing for part-image to build/);
  });

  it('plans every run even when one has an unknown OUTPUT_FORMAT, and exits 2 naming it', async () => {
    await writeFile(join(work, 'fmt.toml'), raptorToml('out-fmt').replace('env.OUTPUT_FORMAT = "qcow2"', 'env.OUTPUT_FORMAT = "iso"'));
    const r = await runCli(['make', '-n', '--file', 'fmt.toml'], { cwd: work });
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toContain('would build part1: tree -> out-fmt/part.img');
    expect(r.stdout).toMatch(/cannot plan q: run q: unknown env.OUTPUT_FORMAT "iso"\n {2}Use one of: raw, qcow2, qcow, qed, vdi, vhdx, vmdk, vpc/);
  });

  it('resolves $link in target and output through -L, skips an up-to-date run as raptor make does, and rebuilds it after a change or with -B', async () => {
    const dir = join(work, 'links');
    await mkdir(join(dir, 'root/etc'), { recursive: true });
    await writeFile(join(dir, 'root/etc/os-release'), 'ID=x\n');
    await writeFile(join(dir, 'Raptor.toml'), '[run.p]\ntarget = "$pi.part-image"\ninput = "root"\noutput = "$images/p.img"\nenv.FREE_MB = "4"\n');
    const args = ['make', '-L', 'pi', '/nonexistent/builders', '-L', 'images', join(dir, 'img'), ...SKIP];
    const first = await runCli(args, { cwd: dir });
    expect(first.exitCode).toBe(0);
    expect(await sniffFile(join(dir, 'img/p.img'))).toBe('image');
    const again = await runCli(args, { cwd: dir });
    expect(again.exitCode).toBe(0);
    expect(again.stderr).toMatch(/make: up to date: p: img\/p.img is newer than its input, skipped as raptor make does \(-B builds it\)/);
    expect(again.stderr).not.toMatch(/building run p/);
    const forced = await runCli([...args, '-B'], { cwd: dir });
    expect(forced.stderr).toMatch(/building run p \(1\/1\)/);
    const later = new Date(Date.now() + 5000);
    await writeFile(join(dir, 'root/etc/os-release'), 'ID=y\n');
    await utimes(join(dir, 'root/etc/os-release'), later, later);
    const changed = await runCli(args, { cwd: dir });
    expect(changed.exitCode).toBe(0);
    expect(changed.stderr).toMatch(/building run p \(1\/1\)/);
  });

  it('exits 2 for an input that names a Raptor target, prints the Raptor command, and builds no run at all', async () => {
    await writeFile(join(work, 'target.toml'), '[raptor.link]\nrbuild = "raptor-builders"\n\n' +
      '[run.good]\ntarget = "$rbuild.part-image"\ninput = "tree"\noutput = "out-target/good.img"\n\n' +
      '[run.part1]\ntarget = "$rbuild.part-image"\ninput = "test"\noutput = "out-target/part.img"\n');
    const r = await runCli(['make', '--file', 'target.toml', ...SKIP], { cwd: work });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/run part1: the input is a Raptor target; part-image cannot build it without Raptor/);
    expect(r.stderr).toContain(`cd ${work} && sudo raptor run -L pib `);
    expect(existsSync(join(work, 'out-target'))).toBe(false);
  });

  it('exits with the worst run: one accepted and one rejected run give 1', async () => {
    // A qemu-img whose compare reports a mismatch rejects the qcow2 run only.
    const bin = join(work, 'fake-bin');
    await mkdir(bin, { recursive: true });
    const real = (await execa('sh', ['-c', 'command -v qemu-img'])).stdout.trim();
    await writeFile(join(bin, 'qemu-img'), `#!/bin/sh\nif [ "$1" = compare ]; then echo 'Content mismatch at offset 0!'; exit 1; fi\nexec ${real} "$@"\n`);
    await chmod(join(bin, 'qemu-img'), 0o755);
    await writeFile(join(work, 'worst.toml'), raptorToml('out-worst'));
    const r = await runCli(['make', 'q', 'part1', '--file', 'worst.toml', ...SKIP], { cwd: work, env: { PATH: `${bin}:${process.env.PATH}` } });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toMatch(/ {2}REJECTED {2}q .*part.qcow2.rejected\n {2}ACCEPTED {2}part1 /);
    expect(existsSync(join(work, 'out-worst/part.qcow2'))).toBe(false);
    expect(await sniffFile(join(work, 'out-worst/part.qcow2.rejected'))).toBe('image');
    expect(await sniffFile(join(work, 'out-worst/part.img'))).toBe('image');
  });

  it('takes FREE_MB from the run, never from the shell, and says so', async () => {
    await writeFile(join(work, 'shell.toml'), raptorToml('out-shell'));
    const r = await runCli(['make', 'part1', '--file', 'shell.toml', ...SKIP, '--report-json', 'shell.json'], { cwd: work, env: { FREE_MB: '900' } });
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toMatch(/make ignores FREE_MB from your shell/);
    const free = (await readJson(join(work, 'shell.json'))).stages.find((s: { name: string }) => s.name === 'freespace');
    expect(free.details.freeMb).toBeLessThan(100);
  });

  it('refuses --golden with several runs, a missing Raptor.toml and an unknown run (exit 2)', async () => {
    const g = await runCli(['make', '--golden', 'g.json'], { cwd: work });
    expect(g.exitCode).toBe(2);
    expect(g.stderr).toMatch(/--golden compares one image, but 2 runs were selected/);
    const none = await runCli(['make'], { cwd: join(work, 'base') });
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toMatch(/no Raptor.toml here/);
    const unknown = await runCli(['make', 'nope'], { cwd: work });
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toMatch(/no run named "nope"/);
    expect(unknown.stderr).toMatch(/Runs: disk, part1, q; groups: %images/);
  });
});
