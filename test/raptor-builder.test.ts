// builder/part-image.rapt, run the way Raptor runs a builder (src/runner/runner.rs,
// src/sandbox/nspawn.rs): systemd-nspawn with the builder's layers as the root
// overlay (bottom first, a work dir on top, -D an empty root holding /usr), the
// input target's layers overlaid read-only at /input (--overlay-ro), an empty
// file bound at /output/disk.img (--bind), the run's env as --setenv, and the
// recipe's CMD through the default entrypoint /bin/sh -c. The builder's root
// is built from the recipe's apt packages with mmdebstrap (cached by recipe),
// plus Node 20 (this host's binary, as the recipe's nodesource package would
// give) and part-image installed from `npm pack`. The image that comes out is
// checked with e2fsck and diffed against the merged input layers.
// Differences from Raptor, for this host (docs/raptor.md): --register=no
// --keep-unit --resolv-conf=off --timezone=off (no system bus, see
// host-notes), no --background= (systemd 256 and later; Debian 12 has 252),
// and no /dev/kvm bind.
import { createHash, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { cacheDir } from './helpers/debian-root.js';
import { isRoot } from './helpers/trees.js';
import { makeBusyboxTree } from './fixtures/boot/images.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const RAPT = join(REPO, 'builder/part-image.rapt');

/** The recipe's apt packages (its `apt-get install` lines), without those only the nodesource setup needs. */
export function recipePackages(rapt: string): string[] {
  const pkgs = rapt.split('\n').filter((l) => /^RUN apt-get install /.test(l))
    .flatMap((l) => l.replace(/^RUN apt-get install /, '').split(/\s+/)).filter((w) => w && !w.startsWith('-'));
  return pkgs.filter((p) => !['curl', 'gnupg', 'nodejs'].includes(p));
}

/** The recipe's CMD, unquoted. */
export function recipeCmd(rapt: string): string {
  const line = rapt.split('\n').find((l) => l.startsWith('CMD '));
  if (!line) throw new Error('builder/part-image.rapt has no CMD');
  return JSON.parse(line.slice(4));
}

async function builderRootTar(packages: string[]): Promise<string> {
  const args = ['--variant=minbase', `--include=${packages.join(',')}`, 'bookworm'];
  const key = createHash('sha256').update(JSON.stringify(args)).digest('hex').slice(0, 12);
  const tar = join(cacheDir(), `builder-root-${key}.tar`);
  if (existsSync(tar)) return tar;
  await mkdir(cacheDir(), { recursive: true });
  const tmp = `${tar}.tmp-${process.pid}.tar`;
  try {
    await execa('mmdebstrap', ['--quiet', ...args, tmp], { stdio: ['ignore', 'inherit', 'inherit'] });
    await rename(tmp, tar);
  } finally {
    await rm(tmp, { force: true });
  }
  return tar;
}

let work: string;
let rapt: string;
/** The builder's layers, bottom first: the Debian root with the recipe's packages, then node + part-image. */
const builderLayers: string[] = [];

beforeAll(async () => {
  expect(isRoot, 'Raptor runs builders with systemd-nspawn, as root').toBe(true);
  work = await mkdtemp(join(tmpdir(), 'pi-raptor-builder-'));
  rapt = await readFile(RAPT, 'utf8');
  const tar = await builderRootTar(recipePackages(rapt));
  const debian = join(work, 'layers/debian-bookworm-builder');
  await mkdir(debian, { recursive: true });
  await execa('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', tar, '-C', debian]);
  // The recipe's node + `npm install --global` of the packed package, as its own layer.
  const pi = join(work, 'layers/part-image');
  await mkdir(join(pi, 'usr/local/bin'), { recursive: true });
  await copyFile(process.execPath, join(pi, 'usr/local/bin/node'));
  await chmod(join(pi, 'usr/local/bin/node'), 0o755);
  const pack = await execa('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', work], { cwd: REPO });
  const tgz = join(work, pack.stdout.trim().split('\n').at(-1)!);
  await execa('npm', ['install', '--global', '--omit=dev', '--prefix', join(pi, 'usr/local'), '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tgz]);
  for (const d of ['input', 'output', 'cache']) await mkdir(join(pi, d), { recursive: true });
  builderLayers.push(debian, pi);
}, 900_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

interface RaptorRun {
  name: string;
  /** The input target's layers, bottom first. */
  inputLayers: string[];
  env: Record<string, string>;
  /** The run's cache folder, bound at /cache as Raptor's simple mount binds it. */
  cache?: string;
}

/** What Raptor's Runner::spawn runs for a builder: the same systemd-nspawn argv, plus this host's four flags. */
async function runBuilder(run: RaptorRun): Promise<{ exitCode: number; output: string; out: string }> {
  const tmp = join(work, `raptor-temp-${run.name}`);
  const root = join(tmp, 'root');
  await mkdir(join(root, 'usr'), { recursive: true });
  const state = join(tmp, 'work');
  await mkdir(state, { recursive: true });
  const out = join(work, `${run.name}.img`);
  await writeFile(out, '', { flag: 'a' }); // File::options().create(true).append(true)
  const uuid = randomUUID();
  const args = [
    '--console', 'pipe',
    '--overlay', [...builderLayers, state, '/'].join(':'),
    '--overlay-ro', [...run.inputLayers, '/input'].join(':'),
    '--bind', `${out}:/output/disk.img`,
    ...(run.cache ? ['--bind', `${run.cache}:/cache`] : []),
    '--machine', `raptor-${uuid}`, '--uuid', uuid,
    '-D', root,
    ...Object.entries(run.env).flatMap(([k, v]) => ['--setenv', `${k}=${v}`]),
    '--register=no', '--keep-unit', '--resolv-conf=off', '--timezone=off',
    '--no-pager', // Raptor also passes --background= (systemd 256+; this host has 252: only a terminal tint)
    '/bin/sh', '-c', recipeCmd(rapt),
  ];
  const r = await execa('systemd-nspawn', args, { reject: false, all: true, timeout: 300_000 });
  return { exitCode: r.exitCode ?? -1, output: String(r.all), out };
}

/** A layers mount of the input layers, for `part-image diff` against the image. */
async function layersMount(name: string, layers: string[]): Promise<string> {
  const dir = join(work, `mount-${name}`);
  await mkdir(dir, { recursive: true });
  const names = layers.map((l, i) => `${i}-${l.split('/').pop()}`);
  for (const [i, l] of layers.entries()) await symlink(l, join(dir, names[i]));
  await writeFile(join(dir, 'raptor.json'), JSON.stringify({ targets: [name], layers: { [name]: names } }));
  return dir;
}

async function rootLayers(name: string): Promise<string[]> {
  const base = join(work, `in-${name}/base`);
  await makeBusyboxTree(base);
  await symlink('busybox', join(base, 'usr/bin/init'));
  await symlink('usr/bin', join(base, 'sbin'));
  await mkdir(join(base, 'srv'), { recursive: true });
  await writeFile(join(base, 'srv/old'), 'removed by the app layer\n');
  const app = join(work, `in-${name}/app`);
  await mkdir(join(app, 'srv'), { recursive: true });
  await mkdir(join(app, 'etc'), { recursive: true });
  await writeFile(join(app, 'etc/motd'), 'built by the part-image builder\n');
  await execa('mknod', [join(app, 'srv/old'), 'c', '0', '0']); // an overlayfs whiteout
  return [base, app];
}

describe('builder/part-image.rapt under systemd-nspawn, as Raptor runs it', () => {
  it('the recipe and the test agree: its packages and its CMD', () => {
    expect(recipePackages(rapt)).toEqual(['ca-certificates', 'e2fsprogs', 'attr', 'acl', 'qemu-utils']);
    expect(recipeCmd(rapt)).toMatch(/part-image build --skip nspawn,portable$/);
    expect(rapt).toMatch(/^MOUNT --overlay input \/input$/m);
    expect(rapt).toMatch(/^MOUNT --file output \/output\/disk.img$/m);
  });

  it('a root tree from two layers (one whiteout): accepted, e2fsck clean, equal to the merged layers', async () => {
    const layers = await rootLayers('root');
    const r = await runBuilder({ name: 'root', inputLayers: layers, env: { FREE_MB: '4' } });
    expect(r.output).toMatch(/ACCEPTED/);
    expect(r.exitCode).toBe(0);
    await execa('e2fsck', ['-fn', r.out]);
    const d = await runCli(['diff', r.out, await layersMount('root', layers)]);
    expect(d.stdout + d.stderr).toMatch(/^same: /);
    expect(d.exitCode).toBe(0);
    const m = await runCli(['manifest', r.out]);
    expect(m.stdout).toContain('"/etc/motd"');
    expect(m.stdout).not.toContain('"/srv/old"');
  }, 300_000);

  it('a data partition: accepted with the default command, the boot stages not applicable', async () => {
    const data = join(work, 'in-data/files');
    await mkdir(join(data, 'EFI/BOOT'), { recursive: true });
    await writeFile(join(data, 'EFI/BOOT/linux.efi'), Buffer.alloc(128 * 1024, 3));
    const r = await runBuilder({ name: 'data', inputLayers: [data], env: { FREE_MB: '2' } });
    expect(r.output).toMatch(/does not apply to a data partition/);
    expect(r.exitCode).toBe(0);
    await execa('e2fsck', ['-fn', r.out]);
    const d = await runCli(['diff', r.out, data]);
    expect(d.exitCode).toBe(0);
  }, 300_000);

  it('OUTPUT_FORMAT=qcow2: the output file is a qcow2 holding the merged layers', async () => {
    const layers = await rootLayers('qcow2');
    const r = await runBuilder({ name: 'qcow2', inputLayers: layers, env: { OUTPUT_FORMAT: 'qcow2', SIZE_MB: '32' } });
    expect(r.exitCode).toBe(0);
    const info = JSON.parse((await execa('qemu-img', ['info', '-f', 'qcow2', '--output=json', r.out])).stdout);
    expect(info).toMatchObject({ format: 'qcow2', 'virtual-size': 32 * 1024 * 1024 });
    const raw = join(work, 'qcow2-check.raw');
    await execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', r.out, raw]);
    await execa('e2fsck', ['-fn', raw]);
    const d = await runCli(['diff', r.out, await layersMount('qcow2', layers)]);
    expect(d.exitCode).toBe(0);
  }, 300_000);

  it('a rejected image and its report are kept in the cache mount, where the CMD points PART_IMAGE_REJECTED_DIR', async () => {
    const data = join(work, 'in-reject/files');
    await mkdir(data, { recursive: true });
    await writeFile(join(data, 'f'), 'x\n');
    // As Raptor mounts a run's cache: --bind of the folder at /cache.
    const cache = join(work, 'cache-mount');
    await mkdir(cache, { recursive: true });
    const r = await runBuilder({ name: 'reject', inputLayers: [data], env: { PART_IMAGE_ROLE: 'root' }, cache });
    expect(r.exitCode).toBe(1);
    expect(r.output).toContain('rejected image kept at /cache/part-image-rejected/disk.img.rejected');
    expect(existsSync(join(cache, 'part-image-rejected/disk.img.rejected'))).toBe(true);
    const report = JSON.parse(await readFile(join(cache, 'part-image-rejected/disk.img.report.json'), 'utf8'));
    expect(report.accepted).toBe(false);
  }, 300_000);
});
