// The package as a user gets it: `npm pack`, a global install into a
// temporary prefix, `part-image demo` from another folder, the man page and
// the bash completion installed with it; and the CI recipe
// (docs/ci/part-image-ci.sh) run from the packed package in an empty folder,
// as a CI job would, its JUnit file checked against junit-10.xsd.
import { existsSync, realpathSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const XSD = fileURLToPath(new URL('./fixtures/junit/junit-10.xsd', import.meta.url));
let work: string;
let tarball: string;
let files: string[];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-package-'));
  // npm test has just built dist/; --ignore-scripts keeps `prepare` from rebuilding it under the running tests.
  const r = await execa('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: REPO });
  const [info] = JSON.parse(r.stdout) as { filename: string; files: { path: string }[] }[];
  tarball = join(work, info.filename);
  files = info.files.map((f) => f.path);
}, 120_000);
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('the npm package', () => {
  it('holds the docs the README links to, the licence, the man page, the completion and the schemas', async () => {
    for (const f of ['LICENSE', 'README.md', 'docs/ci.md', 'docs/ci/part-image-ci.sh', 'docs/raptor.md', 'docs/layer-stack.md',
      'man/part-image.1', 'completion/part-image.bash', 'schema/report.schema.json', 'schema/doctor.schema.json',
      'schema/diff.schema.json', 'dist/bin.js', 'dist/cli.js', 'vm/recipe.json', 'golden/demo.manifest.json']) expect(files).toContain(f);
    expect(files.filter((f) => f.startsWith('test/') || f.startsWith('src/') || f === 'man/generate.mjs')).toEqual([]);
    const readme = await readFile(join(REPO, 'README.md'), 'utf8');
    const links = [...readme.matchAll(/\]\(((?:docs|schema|golden|vm)\/[^)#\s]+)\)/g)].map((m) => m[1]);
    expect(links.length).toBeGreaterThan(0);
    for (const l of links) expect(files, `README links to ${l}`).toContain(l);
    const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8'));
    expect(pkg.license).toBe('MIT');
    expect(await readFile(join(REPO, 'LICENSE'), 'utf8')).toMatch(/^MIT License/);
    // tar-pax.ts wraps tar-stream's private _decodeLongHeader: no range may re-resolve it.
    expect(pkg.dependencies['tar-stream']).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('installs globally into a prefix and runs the demo from another folder, with the man page and the completion', async () => {
    const prefix = join(work, 'prefix');
    const inst = await execa('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--loglevel=error', tarball], { reject: false });
    expect(inst.exitCode, inst.stderr).toBe(0);
    const bin = join(prefix, 'bin/part-image');
    const pkgDir = join(prefix, 'lib/node_modules/part-image');
    const pinned = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')).dependencies['tar-stream'];
    expect(JSON.parse(await readFile(join(pkgDir, 'node_modules/tar-stream/package.json'), 'utf8')).version).toBe(pinned);

    const elsewhere = join(work, 'elsewhere');
    await mkdir(elsewhere);
    // The portable stage would boot the part-image VM under TCG here; the VM tests own that.
    const demo = await execa(bin, ['demo', '--skip', 'portable'], { cwd: elsewhere, reject: false, env: { PART_IMAGE_NSPAWN: 'host' } });
    expect(demo.exitCode, `${demo.stdout}\n${demo.stderr}`).toBe(0);
    expect(demo.stdout).toMatch(/ACCEPTED: .*demo_1\.0\.raw/);
    expect(existsSync(join(elsewhere, 'demo_1.0.raw'))).toBe(true);

    // npm links the "man" entries into PREFIX/share/man, where man finds them.
    const page = join(prefix, 'share/man/man1/part-image.1');
    expect(existsSync(page)).toBe(true);
    const where = await execa('man', ['-w', 'part-image'], { env: { MANPATH: join(prefix, 'share/man') } });
    expect(realpathSync(where.stdout.trim())).toBe(realpathSync(page));
    expect(realpathSync(page)).toBe(join(pkgDir, 'man/part-image.1'));
    const shown = await execa('man', ['-l', page], { env: { MANWIDTH: '100', LC_ALL: 'C.UTF-8' } });
    expect(shown.stderr).toBe('');
    expect(shown.stdout).toMatch(/part-image - build Linux partition images/);

    const completion = join(pkgDir, 'completion/part-image.bash');
    const words = await execa('bash', ['-c', `source "$1"; COMP_WORDS=(part-image b); COMP_CWORD=1; _part_image; echo "\${COMPREPLY[*]}"; complete -p part-image`, 'bash', completion]);
    expect(words.stdout).toBe('build boot\ncomplete -o filenames -F _part_image part-image');
  }, 300_000);

  it('the CI recipe runs from the packed package in an empty folder, and writes JUnit that junit-10.xsd accepts', async () => {
    const job = join(work, 'job');
    await mkdir(join(job, 'rootfs/etc'), { recursive: true });
    await writeFile(join(job, 'rootfs/etc/os-release'), 'ID=ci\n');
    await writeFile(join(job, 'rootfs/etc/motd'), 'built in CI\n');
    // The script as a user copies it: out of the package.
    await execa('tar', ['-xzf', tarball, '-C', job, 'package/docs/ci/part-image-ci.sh']);
    const script = join(job, 'package/docs/ci/part-image-ci.sh');
    const r = await execa('bash', [script, 'rootfs', 'root.img', '--skip', 'diagnose,nspawn', '--free-mb', '4'],
      { cwd: job, reject: false, env: { PART_IMAGE_PACKAGE: tarball } });
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/ACCEPTED: .*root\.img/);
    expect(r.stderr).toContain('part-image-ci: exit 0; JUnit in part-image-junit.xml, report in part-image-report.json');
    expect(existsSync(join(job, '.part-image/bin/part-image'))).toBe(true);
    const lint = await execa('xmllint', ['--noout', '--schema', XSD, join(job, 'part-image-junit.xml')], { reject: false });
    expect(lint.exitCode, lint.stderr).toBe(0);
    expect(JSON.parse(await readFile(join(job, 'part-image-report.json'), 'utf8'))).toMatchObject({ format: 'part-image-report/1', accepted: true });

    // A rejected build: the script passes on exit 1, and the JUnit file is there for the publisher.
    const bad = await execa('bash', [script, 'no-such-tree', 'bad.img'], { cwd: job, reject: false, env: { PART_IMAGE_PACKAGE: tarball, JUNIT: 'bad.xml' } });
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('part-image-ci: exit 2');
  }, 300_000);
});
