// readLayerTree on a real 3-layer stack: overlayfs whiteouts (char 0/0),
// opaque directories (trusted.overlay.opaque, user.overlay.opaque), OCI
// .wh.NAME and .wh..wh..opq markers, per-layer hardlinks; raptor.json target
// selection; and a cross-check against a real overlayfs mount.
import { createHash } from 'node:crypto';
import { chmod, link, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readLayerTree } from '../src/input/layers.js';
import { looksLikeLayerStack, selectLayers } from '../src/raptor/mounts-info.js';
import { readInput } from '../src/input/index.js';
import { readDirTree } from '../src/walk/dir.js';
import { Scope } from '../src/cleanup.js';
import { InputError } from '../src/errors.js';
import { diffManifests } from '../src/manifest/diff.js';
import type { InputTree, ManifestEntry } from '../src/types.js';
import { isRoot } from './helpers/trees.js';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

let work: string;
const scope = new Scope();

async function file(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
}
async function whiteout(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await execa('mknod', [path, 'c', '0', '0']);
}
async function xattr(path: string, name: string, value: string): Promise<void> {
  await execa('setfattr', ['-n', name, '-v', value, path]);
}

/** base <- mid <- top, with every kind of whiteout and opaque marker. */
async function makeStack(stack: string): Promise<void> {
  const base = join(stack, 'base');
  await file(join(base, 'etc/os-release'), 'base\n');
  await file(join(base, 'etc/keep'), 'keep\n');
  await file(join(base, 'opt/app/a'), 'a\n');
  await file(join(base, 'opt/app/b'), 'b\n');
  await file(join(base, 'var/lib/x/data'), 'd\n');
  await file(join(base, 'usr/share/doc/README'), 'doc\n');
  await file(join(base, 'usr/share/doc/extra/more'), 'e\n');
  await file(join(base, 'usr/bin/old'), 'old\n');
  await file(join(base, 'usr/bin/stay'), 'stay\n');
  await file(join(base, 'srv/hl1'), 'hl\n');
  await link(join(base, 'srv/hl1'), join(base, 'srv/hl2'));
  await file(join(base, 'srv/cross1'), 'cross\n');
  await link(join(base, 'srv/cross1'), join(base, 'srv/cross2'));
  await file(join(base, 'data/f'), 'f\n');
  await file(join(base, 'home/u/f'), 'u\n');
  await symlink('etc/os-release', join(base, 'link'));

  const mid = join(stack, 'mid');
  await file(join(mid, 'etc/os-release'), 'mid\n');
  await file(join(mid, 'opt/app/c'), 'c\n');
  await xattr(join(mid, 'opt/app'), 'trusted.overlay.opaque', 'y');
  await xattr(join(mid, 'opt/app'), 'user.keep', '1');
  await whiteout(join(mid, 'var/lib/x'));
  await xattr(join(mid, 'var'), 'trusted.overlay.impure', 'y');
  await file(join(mid, 'data'), 'now a file\n');
  await file(join(mid, 'home/v/g'), 'v\n');
  await xattr(join(mid, 'home'), 'user.overlay.opaque', 'y');

  const top = join(stack, 'top');
  await mkdir(join(top, 'etc'), { recursive: true });
  await chmod(join(top, 'etc'), 0o750);
  await file(join(top, 'usr/share/doc/.wh..wh..opq'), '');
  await file(join(top, 'usr/share/doc/NEW'), 'new\n');
  await file(join(top, 'usr/bin/.wh.old'), '');
  await file(join(top, 'srv/cross2'), 'top\n');
  await file(join(top, '.wh.nothing'), '');
  await file(join(top, '.wh..wh.plnk'), '');
}

const dir = (path: string, mode = '0755', extra: Partial<ManifestEntry> = {}): ManifestEntry => ({
  path, type: 'dir', mode, uid: 0, gid: 0, ...extra,
});
const reg = (path: string, text: string, extra: Partial<ManifestEntry> = {}): ManifestEntry => ({
  path, type: 'file', mode: '0644', uid: 0, gid: 0, size: Buffer.byteLength(text), sha256: sha256(text), ...extra,
});

const EXPECTED: ManifestEntry[] = [
  dir('/'),
  reg('/data', 'now a file\n'),
  dir('/etc', '0750'),
  reg('/etc/keep', 'keep\n'),
  reg('/etc/os-release', 'mid\n'),
  dir('/home'),
  dir('/home/v'),
  reg('/home/v/g', 'v\n'),
  { path: '/link', type: 'symlink', mode: '0777', uid: 0, gid: 0, size: 14, target: 'etc/os-release' },
  dir('/opt'),
  dir('/opt/app', '0755', { xattrs: { 'user.keep': '31' } }),
  reg('/opt/app/c', 'c\n'),
  dir('/srv'),
  reg('/srv/cross1', 'cross\n'),
  reg('/srv/cross2', 'top\n'),
  reg('/srv/hl1', 'hl\n', { nlink: 2 }),
  reg('/srv/hl2', 'hl\n', { nlink: 2, hardlink: '/srv/hl1' }),
  dir('/usr'),
  dir('/usr/bin'),
  reg('/usr/bin/stay', 'stay\n'),
  dir('/usr/share'),
  dir('/usr/share/doc'),
  reg('/usr/share/doc/NEW', 'new\n'),
  dir('/var'),
  dir('/var/lib'),
];

/** raptor.json as Raptor's runner writes it into a --layers mount. */
const mountsInfo = (layers: Record<string, string[]>) => JSON.stringify({ targets: Object.keys(layers), layers }, null, 2);

const withoutMtime = (t: InputTree) => t.manifest.entries.map(({ mtime: _m, ...rest }) => rest);

beforeAll(async () => {
  expect(isRoot, 'this test needs root (mknod whiteouts, trusted.* xattrs, overlay mounts)').toBe(true);
  process.umask(0o022);
  work = await mkdtemp(join(tmpdir(), 'pi-layers-test-'));
});

afterAll(async () => {
  await scope.close();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('readLayerTree', () => {
  let stack: string;
  let tree: InputTree;
  beforeAll(async () => {
    stack = join(work, 'stack');
    await makeStack(stack);
    await writeFile(join(stack, 'raptor.json'), mountsInfo({ rootfs: ['base', 'mid', 'top'] }));
    tree = await readLayerTree(stack, scope);
  });

  it('merges the layers with overlayfs and OCI semantics, exactly', () => {
    expect(tree.kind).toBe('layers');
    expect(tree.source).toBe(stack);
    expect(withoutMtime(tree)).toEqual(EXPECTED);
  });

  it('reads each file from the layer that wins it', () => {
    expect(tree.content.get('/etc/os-release')).toBe(join(stack, 'mid/etc/os-release'));
    expect(tree.content.get('/etc/keep')).toBe(join(stack, 'base/etc/keep'));
    expect(tree.content.get('/srv/cross2')).toBe(join(stack, 'top/srv/cross2'));
    expect([...tree.content.keys()].sort()).toEqual(EXPECTED.filter((e) => e.type === 'file').map((e) => e.path).sort());
  });

  it('counts the merged size in MiB', () => {
    expect(Number.isInteger(tree.usedMb)).toBe(true);
    expect(tree.usedMb).toBeGreaterThan(0);
  });

  it('leaves sha256 out with hash: false', async () => {
    const t = await readLayerTree(stack, scope, { hash: false });
    expect(t.manifest.entries.some((e) => e.sha256 !== undefined)).toBe(false);
    expect(t.manifest.entries.map((e) => e.path)).toEqual(EXPECTED.map((e) => e.path));
  });

  it('picks a target from raptor.json, and refuses to guess between several', async () => {
    const s2 = join(work, 'stack2');
    await makeStack(s2);
    await writeFile(
      join(s2, 'raptor.json'),
      mountsInfo({ rootfs: ['base', 'mid', 'top'], minimal: ['base'] }),
    );
    const full = await readLayerTree(s2, scope, { target: 'rootfs' });
    expect(withoutMtime(full)).toEqual(EXPECTED);
    const minimal = await readLayerTree(s2, scope, { target: 'minimal', hash: false });
    expect(minimal.manifest.entries.map((e) => e.path)).toContain('/usr/bin/old');
    const err = await readLayerTree(s2, scope).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/several targets: rootfs, minimal/);
    await expect(readLayerTree(s2, scope, { target: 'nope' })).rejects.toThrow(/no target "nope".*rootfs, minimal/);
  });

  it('refuses a layer that is not a folder of the stack', async () => {
    const s3 = join(work, 'stack3');
    await mkdir(join(s3, 'base'), { recursive: true });
    await writeFile(join(s3, 'raptor.json'), mountsInfo({ t: ['base', 'missing'] }));
    await expect(readLayerTree(s3, scope)).rejects.toThrow(/layer missing .*not a folder/);
    await writeFile(join(s3, 'raptor.json'), mountsInfo({ t: ['base', '../etc'] }));
    await expect(readLayerTree(s3, scope)).rejects.toThrow(/bad layer/);
    await writeFile(join(s3, 'raptor.json'), '{"layers": [');
    await expect(readLayerTree(s3, scope)).rejects.toThrow(/not valid JSON/);
  });
});

describe('selectLayers', () => {
  it("reads raptor.json as Raptor's runner writes it: one target is the default, --target picks among several", () => {
    expect(selectLayers({ targets: ['only'], layers: { only: ['a'] } })).toEqual({ target: 'only', layers: ['a'] });
    const two = { targets: ['x', 'y'], layers: { y: ['a', 'c'], x: ['a', 'b'] } }; // layer a is shared
    expect(selectLayers(two, 'y')).toEqual({ target: 'y', layers: ['a', 'c'] });
    expect(() => selectLayers(two)).toThrow(/several targets: x, y/);
    expect(() => selectLayers(two, 'z')).toThrow(/no target "z"; its targets: x, y/);
    // Names as Raptor writes them: module names with "$", "." and "@".
    expect(selectLayers({ targets: ['$book.ssh'], layers: { '$book.ssh': ['ssh-0123456789ABCDEF'] } }, '$book.ssh').layers).toEqual(['ssh-0123456789ABCDEF']);
  });
  it('refuses malformed files with a hint (exit 2)', () => {
    for (const bad of [[], null, {}, { targets: [] }, { targets: ['a'] }, { targets: ['a'], layers: {} }, { targets: ['a'], layers: { a: [] } },
      { targets: ['a'], layers: { a: ['/abs'] } }, { targets: ['a'], layers: { a: [1] } }, { targets: [1], layers: {} }]) {
      expect(() => selectLayers(bad)).toThrow(InputError);
    }
  });
  it("refuses part-image 0.1's own forms, giving the same stack in Raptor's form", () => {
    const e1 = (() => { try { selectLayers({ layers: ['a', 'b'] }); } catch (e) { return e as InputError; } })();
    expect(e1?.message).toMatch(/part-image 0.1's own stack form/);
    expect(e1?.hint).toContain('{"targets":["root"],"layers":{"root":["a","b"]}}');
    expect(() => selectLayers({ targets: { t: { layers: ['a'] } } })).toThrow(/own stack form/);
  });
});

describe('what is a layer stack', () => {
  it('a folder of raptor.json and the layer folders it names is one; a root tree holding a file /raptor.json is not', async () => {
    const stack = join(work, 'detect-stack');
    await file(join(stack, 'base-0123456789ABCDEF/etc/os-release'), 'ID=x\n');
    await writeFile(join(stack, 'raptor.json'), mountsInfo({ base: ['base-0123456789ABCDEF'] }));
    expect(await looksLikeLayerStack(stack)).toBe(true);

    const root = join(work, 'detect-root');
    await file(join(root, 'etc/os-release'), 'ID=x\n');
    await file(join(root, 'usr/share/app/x'), 'x\n');
    await writeFile(join(root, 'raptor.json'), mountsInfo({ app: ['etc'] })); // even one that names a folder of the tree
    expect(await looksLikeLayerStack(root)).toBe(false);
    await writeFile(join(root, 'raptor.json'), '{"name": "some app manifest"}');
    expect(await looksLikeLayerStack(root)).toBe(false);
    const t = await readInput(root, scope);
    expect(t.kind).toBe('dir');
    expect(t.manifest.entries.map((e) => e.path)).toContain('/raptor.json');
  });
});

describe("Raptor's book: the --layers mount of layers-lister (book/src/mount-types/layers.md)", () => {
  const DEB = 'index.docker.io-library-debian-trixie-675DE2C3A4D8CD82';
  const FL = 'file-lister-16689594BA5D2989';
  const FLO = 'file-lister-output-2CFDE4FEBD507157';
  let mount: string;
  beforeAll(async () => {
    mount = join(work, 'book-layers');
    await file(join(mount, DEB, 'etc/os-release'), 'ID=debian\n');
    await file(join(mount, DEB, 'etc/motd'), 'debian\n');
    await file(join(mount, DEB, 'usr/bin/ls'), 'ls\n');
    await file(join(mount, FL, 'etc/file-lister'), 'lister\n');
    await whiteout(join(mount, FL, 'etc/motd'));
  });

  it('one target: the file Raptor writes, verbatim, is read without --target, with the whiteout applied', async () => {
    await writeFile(join(mount, 'raptor.json'), `{\n  "targets": [\n    "file-lister"\n  ],\n  "layers": {\n    "file-lister": [\n      "${DEB}",\n      "${FL}"\n    ]\n  }\n}\n`);
    // Raptor binds only the input target's layers.
    const t = await readInput(mount, scope);
    expect(t.kind).toBe('layers');
    const paths = t.manifest.entries.map((e) => e.path);
    expect(paths).toEqual(['/', '/etc', '/etc/file-lister', '/etc/os-release', '/usr', '/usr/bin', '/usr/bin/ls']);
  });

  it('two targets sharing the Docker layer: --target picks one, none is exit 2 naming both', async () => {
    await file(join(mount, FLO, 'etc/file-lister-output'), 'output\n');
    await writeFile(join(mount, 'raptor.json'), `{\n  "targets": [\n    "file-lister",\n    "file-lister-output"\n  ],\n  "layers": {\n` +
      `    "file-lister-output": [\n      "${DEB}",\n      "${FLO}"\n    ],\n    "file-lister": [\n      "${DEB}",\n      "${FL}"\n    ]\n  }\n}\n`);
    const out = await readInput(mount, scope, { target: 'file-lister-output' });
    expect(out.manifest.entries.map((e) => e.path)).toEqual(['/', '/etc', '/etc/file-lister-output', '/etc/motd', '/etc/os-release', '/usr', '/usr/bin', '/usr/bin/ls']);
    const fl = await readInput(mount, scope, { target: 'file-lister' });
    expect(fl.manifest.entries.map((e) => e.path)).not.toContain('/etc/motd');
    const err = await readInput(mount, scope).catch((e: unknown) => e as InputError);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).exitCode).toBe(2);
    expect((err as InputError).message).toMatch(/lists several targets: file-lister, file-lister-output/);
  });
});

describe('readLayerTree against a real overlayfs mount', () => {
  it('yields what the kernel shows for overlay-native whiteouts and opaque dirs', async () => {
    const stack = join(work, 'native');
    const base = join(stack, 'base');
    await file(join(base, 'etc/os-release'), 'base\n');
    await file(join(base, 'opt/app/a'), 'a\n');
    await file(join(base, 'var/lib/x/data'), 'd\n');
    await file(join(base, 'srv/hl1'), 'hl\n');
    await link(join(base, 'srv/hl1'), join(base, 'srv/hl2'));
    await file(join(base, 'srv/gone'), 'g\n');
    await xattr(join(base, 'srv/hl1'), 'user.note', 'kept');
    await symlink('../etc/os-release', join(base, 'srv/link'));
    const mid = join(stack, 'mid');
    await file(join(mid, 'etc/os-release'), 'mid\n');
    await file(join(mid, 'opt/app/c'), 'c\n');
    await xattr(join(mid, 'opt/app'), 'trusted.overlay.opaque', 'y');
    await whiteout(join(mid, 'var/lib/x'));
    const top = join(stack, 'top');
    await whiteout(join(top, 'srv/gone'));
    await mkdir(join(top, 'etc'), { recursive: true });
    await chmod(join(top, 'etc'), 0o700);
    await writeFile(join(stack, 'raptor.json'), mountsInfo({ t: ['base', 'mid', 'top'] }));

    const merged = join(work, 'merged');
    await mkdir(merged);
    await execa('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${top}:${mid}:${base}`, merged]);
    scope.defer(`umount ${merged}`, () => execa('umount', [merged]).then(() => undefined));
    const kernel = await readDirTree(merged);
    const ours = await readLayerTree(stack, scope);
    expect(diffManifests(kernel.manifest, ours.manifest)).toEqual([]);
    expect(ours.manifest.entries.map((e) => e.path)).not.toContain('/srv/gone');
    expect(ours.manifest.entries.find((e) => e.path === '/srv/hl2')).toMatchObject({ nlink: 2, hardlink: '/srv/hl1' });
  });
});
