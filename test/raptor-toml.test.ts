// Raptor.toml as Raptor's make reads it (src/make/parser.rs), module names
// and logical paths as Raptor resolves them, run selection (RUN, %GROUP, no
// names), run planning, and a run's input on disk (path, Raptor target, both).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRaptorToml, readRaptorToml } from '../src/raptor/toml.js';
import { isPartImageRun, planRun, raptorWouldRun, selectRuns } from '../src/raptor/plan.js';
import { classifyInput, raptorCommand, resolveRunInput, shellQuote } from '../src/raptor/inputs.js';
import { mergeLinks, parseModuleName, programPath, resolveLogicalPath } from '../src/raptor/module-name.js';
import { builderMountPaths } from '../src/raptor/container.js';
import { perRunPath, rewriteLinkArgs } from '../src/commands/make.js';
import { readInput } from '../src/input/index.js';
import { Scope } from '../src/cleanup.js';
import { InputError, UsageError } from '../src/errors.js';

const SAMPLE = `
[raptor.link]
rbuild = "raptor-builders"

# Partition (filesystem) image, as on the seed builder's page
[run.part1]
target = "$rbuild.part-image"
input = "test"
output = "part.img"
unknown-key = "ignored, as Raptor ignores it"

[run.part2]
target = "$rbuild.part-image"
cache = "cache2"
input = ["base", "app"]
output = ["out/part.qcow2"]
entrypoint = ["/bin/sh", "-c"]
args = ["part-image build"]
state-dir = "state"
env.OUTPUT_FORMAT = "qcow2"
env.FREE_MB = "64"
env.SIZE_MB = "300"
env.GRUB_TIMEOUT = "0"

[run.disk]
target = "$rbuild.disk-image"
input = ["test"]
output = "output/disk.img"

[group.images]
run = ["part2", "part1", "part1"]

[group.all]
run = ["part1", "disk"]
build = ["test", "base"]
`;

const FILE = '/srv/proj/Raptor.toml';

describe('parseRaptorToml', () => {
  const c = parseRaptorToml(SAMPLE, FILE);

  it("reads Raptor's keys: links, runs sorted by name (a BTreeMap), string-or-list fields, state-dir, groups as sorted sets", () => {
    expect(c.dir).toBe('/srv/proj');
    expect(c.links).toEqual({ rbuild: 'raptor-builders' });
    expect([...c.runs.keys()]).toEqual(['disk', 'part1', 'part2']);
    expect(c.runs.get('part1')).toMatchObject({ target: '$rbuild.part-image', inputs: ['test'], outputs: ['part.img'], env: {}, cache: [] });
    expect(c.runs.get('part2')).toMatchObject({
      inputs: ['base', 'app'], outputs: ['out/part.qcow2'], cache: ['cache2'], entrypoint: ['/bin/sh', '-c'], args: ['part-image build'], stateDir: 'state',
      env: { OUTPUT_FORMAT: 'qcow2', FREE_MB: '64', SIZE_MB: '300', GRUB_TIMEOUT: '0' },
    });
    expect(c.groups.get('images')).toEqual({ name: 'images', run: ['part1', 'part2'], build: [] });
    expect(c.groups.get('all')).toEqual({ name: 'all', run: ['disk', 'part1'], build: ['base', 'test'] });
  });

  it('refuses a number in env, as Raptor does, with the quoted fix (exit 2)', () => {
    const err = (() => { try { parseRaptorToml('[run.x]\ntarget = "$r.part-image"\nenv.FREE_MB = 64', 'R.toml'); } catch (e) { return e as InputError; } })();
    expect(err).toBeInstanceOf(InputError);
    expect(err?.exitCode).toBe(2);
    expect(err?.message).toMatch(/\[run.x\] env.FREE_MB must be a string, got 64: Raptor refuses any other value/);
    expect(err?.hint).toBe('Quote it: [run.x] env.FREE_MB = "64"');
  });

  it('refuses bad TOML, a run without target, a non-string input, a string where Raptor wants a list (exit 2)', () => {
    const bad = (text: string) => () => parseRaptorToml(text, 'R.toml');
    expect(bad('[run.x\ntarget = 1')).toThrow(/R.toml is not valid TOML/);
    expect(bad('[run.x]\ninput = "a"')).toThrow(/\[run.x\] has no target/);
    expect(bad('[run.x]\ntarget = "$r.part-image"\ninput = [1]')).toThrow(/\[run.x\] input must be a string or a list of strings/);
    expect(bad('[run.x]\ntarget = "$r.part-image"\nargs = "build"')).toThrow(/\[run.x\] args must be a list of strings/);
    expect(bad('[run.x]\ntarget = "$r.part-image"\nenv.X = true')).toThrow(/env.X must be a string/);
    expect(bad('[raptor.link]\nr = { source = "x" }')).toThrow(/\[raptor.link\] r must be a path string/);
  });

  it('says where to put the file when it is missing', async () => {
    await expect(readRaptorToml('/nonexistent/Raptor.toml')).rejects.toThrow(/no Raptor.toml here/);
  });
});

describe('module names and logical paths, as Raptor resolves them', () => {
  const links = { rbuild: '../builders', abs: '/opt/b' };
  it('parses names: relative, $. absolute, $pkg, @instance', () => {
    expect(parseModuleName('a.b')).toEqual({ root: { kind: 'relative' }, parts: ['a', 'b'], instance: undefined });
    expect(parseModuleName('$.a.b')).toEqual({ root: { kind: 'absolute' }, parts: ['a', 'b'], instance: undefined });
    expect(parseModuleName('$book.ssh')).toEqual({ root: { kind: 'package', name: 'book' }, parts: ['ssh'], instance: undefined });
    expect(parseModuleName('x@inst')).toEqual({ root: { kind: 'relative' }, parts: ['x@'], instance: 'inst' });
  });
  it('finds the .rapt of a name', () => {
    expect(programPath(parseModuleName('os.base'), '/p', links)).toBe('/p/os/base.rapt');
    expect(programPath(parseModuleName('$rbuild.part-image'), '/p/t', links)).toBe('/p/builders/part-image.rapt');
    expect(programPath(parseModuleName('$abs.x.y'), '/p', links)).toBe('/opt/b/x/y.rapt');
    expect(programPath(parseModuleName('$.srv.x'), '/p', links)).toBe('/srv/x.rapt');
    expect(programPath(parseModuleName('svc@web'), '/p', links)).toBe('/p/svc@.rapt');
    expect(programPath(parseModuleName('$nolink.x'), '/p', links)).toBeUndefined();
  });
  it('resolves $link components of outputs, and refuses an undefined link (exit 2)', () => {
    expect(resolveLogicalPath('$rbuild/out/x.img', links, 'o')).toBe('../builders/out/x.img');
    expect(resolveLogicalPath('out/$abs/x.img', links, 'o')).toBe('/opt/b/x.img');
    expect(resolveLogicalPath('/a/b.img', links, 'o')).toBe('/a/b.img');
    expect(() => resolveLogicalPath('$nope/x', links, 'run r output')).toThrow(/run r output: "\$nope\/x" names the link \$nope/);
  });
  it('lets [raptor.link] win over -L, as Raptor adds its links after -L', () => {
    expect(mergeLinks({ rbuild: 'file' }, { rbuild: 'cli', extra: 'e' })).toEqual({ rbuild: 'file', extra: 'e' });
  });
  it('reads -L NAME PATH as two values', () => {
    expect(rewriteLinkArgs(['-n', '-L', 'rbuild', '/x', '%all', '--link', 'a', 'b'])).toEqual(['-n', '--link=rbuild=/x', '%all', '--link=a=b']);
    expect(() => rewriteLinkArgs(['-L', 'only'])).toThrow(UsageError);
  });
});

describe('selectRuns', () => {
  const c = parseRaptorToml(SAMPLE, FILE);
  it('selects every run, sorted, when no name is given (raptor make with no targets)', () => {
    expect(selectRuns(c, []).runs.map((r) => r.name)).toEqual(['disk', 'part1', 'part2']);
  });
  it('reads %GROUP as a group and a bare name as a run; a group brings its build list along', () => {
    const s = selectRuns(c, ['part2', '%all']);
    expect(s.runs.map((r) => r.name)).toEqual(['part2', 'disk', 'part1']);
    expect(s.builds).toEqual([{ group: 'all', target: 'base' }, { group: 'all', target: 'test' }]);
  });
  it('refuses an unknown run or group (exit 2), and points a bare group name at %NAME', () => {
    expect(() => selectRuns(c, ['nope'])).toThrow(/no run named "nope"/);
    expect(() => selectRuns(c, ['%nope'])).toThrow(/no group named "nope"/);
    const err = (() => { try { selectRuns(c, ['images']); } catch (e) { return e as UsageError; } })();
    expect(err?.hint).toMatch(/images is a group: name it %images, as raptor make does/);
    expect(err?.hint).toMatch(/Runs: disk, part1, part2; groups: %all, %images/);
  });
  it('tells part-image runs from the others by the builder module', () => {
    expect(isPartImageRun(c.runs.get('part1')!)).toBe(true);
    expect(isPartImageRun(c.runs.get('disk')!)).toBe(false);
    expect(raptorWouldRun(c.runs.get('part2')!)).toBe('$rbuild.part-image -C cache2 -I base -I app -O out/part.qcow2');
  });
});

describe('planRun', () => {
  const c = parseRaptorToml(SAMPLE, FILE);
  it('resolves the output as Raptor does (relative to the folder make runs in) and reads the builder env', () => {
    const p = planRun(c.runs.get('part2')!, c.links, '/srv/here');
    expect(p).toMatchObject({ output: '/srv/here/out/part.qcow2', format: 'qcow2', builderEnv: { OUTPUT_FORMAT: 'qcow2', FREE_MB: '64', SIZE_MB: '300' } });
    expect(planRun(c.runs.get('part1')!, c.links, '/w').format).toBe('raw');
  });
  it('takes every format qemu-img writes; refuses others listing them, bad sizes, no input and several outputs', () => {
    const run = (body: string) => () => {
      const x = parseRaptorToml(`[run.x]\ntarget = "$r.part-image"\n${body}`, FILE);
      return planRun(x.runs.get('x')!, {}, '/w');
    };
    for (const f of ['raw', 'qcow2', 'qcow', 'qed', 'vdi', 'vhdx', 'vmdk', 'vpc', 'VDI', '']) {
      expect(run(`input = "t"\noutput = "o"\nenv.OUTPUT_FORMAT = "${f}"`)().format).toBe((f || 'raw').toLowerCase());
    }
    const err = (() => { try { run('input = "t"\noutput = "o"\nenv.OUTPUT_FORMAT = "iso"')(); } catch (e) { return e as InputError; } })();
    expect(err?.message).toMatch(/unknown env.OUTPUT_FORMAT "iso"/);
    expect(err?.hint).toMatch(/raw, qcow2, qcow, qed, vdi, vhdx, vmdk, vpc/);
    expect(run('input = "t"\noutput = "o"\nenv.FREE_MB = "lots"')).toThrow(/env.FREE_MB must be a whole number of MiB/);
    expect(run('output = "o"')).toThrow(/has no input/);
    expect(run('input = "t"\noutput = ["a", "b"]')).toThrow(/exactly one output, got 2/);
    expect(run('input = "t"')).toThrow(/exactly one output, got 0/);
  });
});

describe('run inputs on disk', () => {
  let work: string;
  const scope = new Scope();
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'pi-raptor-toml-'));
    await mkdir(join(work, 'base/etc'), { recursive: true });
    await writeFile(join(work, 'base/etc/os-release'), 'ID=base\n');
    await writeFile(join(work, 'base/etc/motd'), 'base\n');
    await mkdir(join(work, 'app/etc'), { recursive: true });
    await writeFile(join(work, 'app/etc/motd'), 'app\n');
    await writeFile(join(work, 'app/.wh.gone'), '');
    await writeFile(join(work, 'base/gone'), 'hidden by the app layer\n');
    await writeFile(join(work, 'test.rapt'), 'FROM docker://debian:bookworm\n');
    await mkdir(join(work, 'both'), { recursive: true });
    await writeFile(join(work, 'both.rapt'), 'FROM docker://debian:bookworm\n');
    await mkdir(join(work, 'os'), { recursive: true });
    await writeFile(join(work, 'os/base.rapt'), 'FROM docker://debian:bookworm\n');
    await mkdir(join(work, 'book'), { recursive: true });
    await writeFile(join(work, 'book/ssh.rapt'), 'FROM docker://debian:bookworm\n');
    await writeFile(join(work, 'root.tar'), '');
  });
  afterAll(async () => {
    await scope.close();
    await rm(work, { recursive: true, force: true });
  });
  const config = () => parseRaptorToml('[raptor.link]\nrbuild = "builders"\nbook = "book"\n', join(work, 'Raptor.toml'));
  const links = { rbuild: 'builders', book: 'book' };
  const kinds = (specs: string[]) => Promise.all(specs.map((s) => classifyInput('r', s, config(), links)));
  const plan = (inputs: string[], env: Record<string, string> = {}) => ({
    name: 'r', run: config().runs.get('r')!, inputSpecs: inputs, output: join(work, 'out dir/o.img'), format: 'raw' as const, builderEnv: {}, env,
  });

  it('tells a path from a Raptor target, refuses a name that is both (exit 2) or neither', async () => {
    expect(await classifyInput('r', 'base', config(), links)).toEqual({ kind: 'path', spec: 'base', path: join(work, 'base') });
    expect(await classifyInput('r', 'test', config(), links)).toEqual({ kind: 'target', spec: 'test', rapt: join(work, 'test.rapt') });
    expect(await classifyInput('r', 'os.base', config(), links)).toMatchObject({ kind: 'target', rapt: join(work, 'os/base.rapt') });
    expect(await classifyInput('r', '$book.ssh', config(), links)).toMatchObject({ kind: 'target', rapt: join(work, 'book/ssh.rapt') });
    const both = await classifyInput('r', 'both', config(), links).catch((e: unknown) => e as UsageError);
    expect(both).toBeInstanceOf(UsageError);
    expect((both as UsageError).message).toBe(`run r: input "both" is ambiguous: it is the Raptor target ${join(work, 'both.rapt')} and the path ${join(work, 'both')}`);
    await expect(classifyInput('r', 'nothing', config(), links)).rejects.toThrow(/input "nothing" is neither a Raptor target .* nor a path/);
    await expect(classifyInput('r', '$nolink.x', config(), links)).rejects.toThrow(/names the link \$nolink/);
  });

  it('prints the Raptor command for a target input: quoted, from the Raptor.toml folder, with the -L it needs and the env', async () => {
    const cmd = await raptorCommand(plan(['$book.ssh'], { OUTPUT_FORMAT: 'qcow2', NOTE: "it's" }), config(), links);
    expect(cmd).toContain(`cd ${shellQuote(work)} && sudo raptor run -L pib `);
    expect(cmd).toContain(` -L book book '$pib.part-image' -I '$book.ssh' -O '${join(work, 'out dir/o.img')}' -e OUTPUT_FORMAT=qcow2 -e 'NOTE=it'\\''s'`);
    expect(shellQuote("a'b")).toBe("'a'\\''b'");
  });

  it('merges several directories in order as an ad-hoc layers mount (upper wins, whiteouts apply)', async () => {
    const stack = await resolveRunInput(plan(['base', 'app']), await kinds(['base', 'app']), scope);
    const tree = await readInput(stack, scope);
    expect(tree.kind).toBe('layers');
    expect(tree.manifest.entries.map((e) => e.path)).toEqual(['/', '/etc', '/etc/motd', '/etc/os-release']);
    expect(tree.content.get('/etc/motd')).toBe(join(work, 'app/etc/motd'));
  });

  it('refuses a list that mixes in a tar, and says how to make one layers mount', async () => {
    const err = await resolveRunInput(plan(['base', 'root.tar']), await kinds(['base', 'root.tar']), scope).catch((e) => e);
    expect(err.message).toMatch(/"root.tar" is a file \(tar archive\)/);
    expect(err.hint).toMatch(/raptor.json .*"targets"/);
  });

  it('passes a single input through untouched', async () => {
    expect(await resolveRunInput(plan(['root.tar']), await kinds(['root.tar']), scope)).toBe(join(work, 'root.tar'));
  });
});

describe('helpers', () => {
  it('names per-run report files', () => {
    expect(perRunPath('out/report.json', 'part1')).toBe('out/report.part1.json');
    expect(perRunPath('junit', 'a/b')).toBe('junit.a_b');
  });
  it('finds the builder mounts under / or PART_IMAGE_BUILDER_ROOT', () => {
    expect(builderMountPaths({})).toEqual({ input: '/input', output: '/output/disk.img' });
    expect(builderMountPaths({ PART_IMAGE_BUILDER_ROOT: '/x' })).toEqual({ input: '/x/input', output: '/x/output/disk.img' });
  });
});
