// Raptor.toml for `part-image make`: parsing (smol-toml), builder targets,
// group expansion, run planning, and the run's input on disk (Raptor target
// names explained, several directories merged as an ad-hoc layer stack).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRaptorToml, readRaptorToml } from '../src/raptor/toml.js';
import { parseTarget, planRun, selectRuns } from '../src/raptor/plan.js';
import { raptorModuleCandidates, resolveRunInput } from '../src/raptor/inputs.js';
import { builderMountPaths } from '../src/raptor/container.js';
import { perRunPath } from '../src/commands/make.js';
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

[run.part2]
target = "$rbuild.part-image"
cache = "cache2"
input = ["base", "app"]
output = ["out/part.qcow2"]
env.OUTPUT_FORMAT = "qcow2"
env.FREE_MB = 64
env.SIZE_MB = "300"
env.GRUB_TIMEOUT = "0"

[run.disk]
target = "$rbuild.disk-image"
input = ["test"]
output = "output/disk.img"

[group.images]
run = ["part1", "part2"]

[group.all]
run = ["images", "disk"]
`;

const FILE = '/srv/proj/Raptor.toml';

describe('parseRaptorToml', () => {
  const c = parseRaptorToml(SAMPLE, FILE);

  it('reads links, runs in file order, groups, and string-or-list fields', () => {
    expect(c.dir).toBe('/srv/proj');
    expect(c.links).toEqual({ rbuild: 'raptor-builders' });
    expect([...c.runs.keys()]).toEqual(['part1', 'part2', 'disk']);
    expect(c.runs.get('part1')).toMatchObject({ target: '$rbuild.part-image', inputs: ['test'], outputs: ['part.img'], env: {} });
    expect(c.runs.get('part2')).toMatchObject({ inputs: ['base', 'app'], outputs: ['out/part.qcow2'] });
    expect(c.groups.get('all')?.run).toEqual(['images', 'disk']);
  });

  it('turns env numbers into strings, as a container would see them', () => {
    expect(c.runs.get('part2')?.env).toEqual({ OUTPUT_FORMAT: 'qcow2', FREE_MB: '64', SIZE_MB: '300', GRUB_TIMEOUT: '0' });
  });

  it('refuses bad TOML, a run without target, a non-string input and a boolean env value, naming the file (exit 2)', () => {
    const bad = (text: string) => () => parseRaptorToml(text, 'R.toml');
    expect(bad('[run.x\ntarget = 1')).toThrow(/R.toml is not valid TOML/);
    expect(bad('[run.x]\ninput = "a"')).toThrow(/\[run.x\] has no target/);
    expect(bad('[run.x]\ntarget = "$r.part-image"\ninput = [1]')).toThrow(/\[run.x\] input must be a string or a list of strings/);
    expect(bad('[run.x]\ntarget = "$r.part-image"\nenv.FREE_MB = true')).toThrow(/env.FREE_MB must be a string or a number/);
    try {
      bad('[run.x]')();
    } catch (err) {
      expect(err).toBeInstanceOf(InputError);
      expect((err as InputError).exitCode).toBe(2);
    }
  });

  it('says where to put the file when it is missing', async () => {
    await expect(readRaptorToml('/nonexistent/Raptor.toml')).rejects.toThrow(/no Raptor.toml here/);
  });
});

describe('targets and run selection', () => {
  const c = parseRaptorToml(SAMPLE, FILE);

  it('parses $LINK.builder targets', () => {
    expect(parseTarget('$rbuild.part-image')).toEqual({ link: 'rbuild', builder: 'part-image' });
    expect(parseTarget('$.part-image')).toEqual({ link: undefined, builder: 'part-image' });
    expect(parseTarget('local.thing')).toEqual({ builder: 'local.thing' });
  });

  it('runs every part-image run when no name is given, and leaves the others to raptor', () => {
    const { runs, ignored } = selectRuns(c, []);
    expect(runs.map((r) => r.name)).toEqual(['part1', 'part2']);
    expect(ignored.map((r) => r.name)).toEqual(['disk']);
  });

  it('expands groups (of groups) in order, without duplicates', () => {
    expect(selectRuns(c, ['part2', 'images']).runs.map((r) => r.name)).toEqual(['part2', 'part1']);
  });

  it('refuses a named run of another builder, saying which builders are supported (exit 2)', () => {
    expect(() => selectRuns(c, ['disk'])).toThrow(UsageError);
    expect(() => selectRuns(c, ['disk'])).toThrow(/disk-image builder, not part-image/);
    try {
      selectRuns(c, ['all']);
    } catch (err) {
      expect((err as UsageError).hint).toMatch(/supported builders: part-image/);
    }
  });

  it('refuses unknown names (listing runs and groups), undefined links, local modules and group cycles', () => {
    expect(() => selectRuns(c, ['nope'])).toThrow(/no run or group named "nope"/);
    const odd = parseRaptorToml('[run.a]\ntarget = "$other.part-image"\ninput = "x"\noutput = "y"\n[run.b]\ntarget = "part-image"\n' +
      '[group.g]\nrun = ["h"]\n[group.h]\nrun = ["g"]\n', FILE);
    expect(() => selectRuns(odd, [])).toThrow(/names the link \$other, which \[raptor.link\] does not define/);
    expect(() => selectRuns(odd, ['b'])).toThrow(/module of this Raptor package/);
    expect(() => selectRuns(odd, ['g'])).toThrow(/group g includes itself \(g -> h -> g\)/);
  });
});

describe('planRun', () => {
  const c = parseRaptorToml(SAMPLE, FILE);

  it('resolves input and output against the Raptor.toml folder and reads the builder env', () => {
    const p = planRun(c.runs.get('part2')!, c);
    expect(p).toMatchObject({
      inputs: ['/srv/proj/base', '/srv/proj/app'], output: '/srv/proj/out/part.qcow2', format: 'qcow2',
      builderEnv: { OUTPUT_FORMAT: 'qcow2', FREE_MB: '64', SIZE_MB: '300' },
    });
    expect(planRun(c.runs.get('part1')!, c).format).toBe('raw');
  });

  it('reads an empty OUTPUT_FORMAT as raw, like the seed builder (${OUTPUT_FORMAT:-raw})', () => {
    const x = parseRaptorToml('[raptor.link]\nr = "."\n[run.x]\ntarget = "$r.part-image"\ninput = "/t"\noutput = "/o.img"\nenv.OUTPUT_FORMAT = ""', FILE);
    expect(planRun(x.runs.get('x')!, x).format).toBe('raw');
  });

  it('refuses an unknown format (with the list), bad sizes, no input and several outputs', () => {
    const run = (extra: string) => {
      const x = parseRaptorToml(`[raptor.link]\nr = "."\n[run.x]\ntarget = "$r.part-image"\n${extra}`, FILE);
      return () => planRun(x.runs.get('x')!, x);
    };
    expect(run('input = "t"\noutput = "o"\nenv.OUTPUT_FORMAT = "vdi"')).toThrow(/unknown env.OUTPUT_FORMAT "vdi"/);
    try {
      run('input = "t"\noutput = "o"\nenv.OUTPUT_FORMAT = "vdi"')();
    } catch (err) {
      expect((err as InputError).hint).toBe('Use one of: raw, qcow2, vmdk.');
    }
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
    await mkdir(join(work, 'os'), { recursive: true });
    await writeFile(join(work, 'os/base.rapt'), 'FROM docker://debian:bookworm\n');
    await writeFile(join(work, 'root.tar'), '');
  });
  afterAll(async () => {
    await scope.close();
    await rm(work, { recursive: true, force: true });
  });
  const config = () => parseRaptorToml('[raptor.link]\nrbuild = "builders"\n', join(work, 'Raptor.toml'));
  const plan = (inputs: string[]) => ({
    name: 'r', inputs: inputs.map((i) => join(work, i)), inputSpecs: inputs, output: join(work, 'o.img'), format: 'raw' as const, builderEnv: {}, env: {},
  });

  it('finds the .rapt file a Raptor target name points at', () => {
    const c = config();
    expect(raptorModuleCandidates('os.base', c)).toContain(join(work, 'os/base.rapt'));
    expect(raptorModuleCandidates('$rbuild.part-image', c)).toContain(join(work, 'builders/part-image.rapt'));
    expect(raptorModuleCandidates('svc@web', c)).toContain(join(work, 'svc@.rapt'));
    expect(raptorModuleCandidates('$nolink.x', c)).toEqual([]);
  });

  it('explains an input that is a Raptor target: export it as a tar, a directory or a layer stack', async () => {
    const err = await resolveRunInput(plan(['test']), config(), scope).catch((e) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toMatch(/input "test" is the Raptor target test.rapt, not a path/);
    expect(err.hint).toMatch(/raptor run export-tar -I test/);
    expect(err.hint).toMatch(/docs\/layer-stack.md/);
    expect(err.hint).toMatch(/builder-container mode/);
    const nested = await resolveRunInput(plan(['os.base']), config(), scope).catch((e) => e);
    expect(nested.message).toMatch(/is the Raptor target os\/base.rapt/);
    const none = await resolveRunInput(plan(['nothing']), config(), scope).catch((e) => e);
    expect(none.message).toMatch(/input "nothing" is neither a path .* nor a Raptor target/);
  });

  it('merges several directories in order as an ad-hoc layer stack (upper wins, whiteouts apply)', async () => {
    const stack = await resolveRunInput(plan(['base', 'app']), config(), scope);
    const tree = await readInput(stack, scope);
    expect(tree.kind).toBe('layers');
    const paths = tree.manifest.entries.map((e) => e.path);
    expect(paths).toEqual(['/', '/etc', '/etc/motd', '/etc/os-release']);
    expect(tree.content.get('/etc/motd')).toBe(join(work, 'app/etc/motd'));
  });

  it('refuses a list that mixes in a tar, and says how to make one layer stack', async () => {
    const err = await resolveRunInput(plan(['base', 'root.tar']), config(), scope).catch((e) => e);
    expect(err.message).toMatch(/"root.tar" is a file \(tar archive\)/);
    expect(err.hint).toMatch(/raptor.json .*"layers"/);
  });

  it('passes a single input through untouched', async () => {
    expect(await resolveRunInput(plan(['root.tar']), config(), scope)).toBe(join(work, 'root.tar'));
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
