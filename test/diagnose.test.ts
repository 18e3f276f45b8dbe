// The boot diagnosis on real images (a Debian root, broken in one way at a
// time), plus the in-image path resolver it stands on.
import { mkdtemp, readFile, rename, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Scope } from '../src/cleanup.js';
import { makeManifest } from '../src/manifest/entry.js';
import type { ManifestEntry } from '../src/types.js';
import { manifestLookup, resolvePath } from '../src/boot/resolve.js';
import { diagnoseStage } from '../src/stages/diagnose.js';
import { primaryCause } from '../src/boot/cause.js';
import { readImageFiles } from '../src/boot/read-files.js';
import { checkDefaultTarget, fstabRootReadOnly, fstabWarnings } from '../src/boot/boot-needs.js';
import { extractDebianRoot, makeBusyboxTree, makeImage, stageContext } from './fixtures/boot/images.js';

const tmp = await mkdtemp(join(tmpdir(), 'part-image-diagnose-'));
const root = join(tmp, 'root');
const aside = join(tmp, 'aside');
afterAll(() => rm(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  await extractDebianRoot(root);
  await mkdir(aside);
});

/** Move paths of `root` aside, build an image, move them back. */
async function imageWithout(name: string, paths: string[], edit?: () => Promise<() => Promise<void>>): Promise<string> {
  const image = join(tmp, `${name}.img`);
  for (const [i, p] of paths.entries()) await rename(join(root, p), join(aside, String(i)));
  const undo = edit ? await edit() : undefined;
  try {
    await makeImage(root, image, 512);
  } finally {
    for (const [i, p] of paths.entries()) await rename(join(aside, String(i)), join(root, p));
    if (undo) await undo();
  }
  return image;
}

async function diagnose(image: string, over = {}) {
  const scope = new Scope();
  try {
    return await diagnoseStage.run(stageContext(image, scope, over));
  } finally {
    await scope.close();
  }
}

describe('resolvePath inside a manifest', () => {
  const e = (path: string, type: ManifestEntry['type'], target?: string): ManifestEntry => ({ path, type, mode: type === 'dir' ? '0755' : '0777', uid: 0, gid: 0, target });
  const m = makeManifest([
    e('/', 'dir'),
    e('/usr', 'dir'),
    e('/usr/lib', 'dir'),
    e('/usr/lib/systemd', 'dir'),
    e('/usr/lib/systemd/systemd', 'file'),
    e('/lib', 'symlink', 'usr/lib'),
    e('/sbin', 'dir'),
    e('/sbin/init', 'symlink', '/lib/systemd/systemd'),
    e('/sbin/loop', 'symlink', 'loop'),
    e('/sbin/dangling', 'symlink', '../nowhere/x'),
    e('/sbin/escape', 'symlink', '../../../etc/passwd'),
    e('/sbin/relative', 'symlink', '../lib/./systemd/../systemd/systemd'),
  ]);
  const lookup = manifestLookup(m);

  it('follows /sbin/init -> /lib/systemd/systemd through /lib -> usr/lib', () => {
    const r = resolvePath(lookup, '/sbin/init');
    expect(r).toMatchObject({ ok: true, path: '/usr/lib/systemd/systemd' });
    expect(r.links).toEqual(['/sbin/init -> /lib/systemd/systemd', '/lib -> usr/lib']);
    expect(resolvePath(lookup, '/sbin/relative')).toMatchObject({ ok: true, path: '/usr/lib/systemd/systemd' });
  });

  it('reports missing, dangling, loops and escapes', () => {
    expect(resolvePath(lookup, '/sbin/none')).toMatchObject({ ok: false, reason: 'missing', at: '/sbin/none' });
    expect(resolvePath(lookup, '/sbin/dangling')).toMatchObject({ ok: false, reason: 'dangling', at: '/nowhere' });
    expect(resolvePath(lookup, '/sbin/loop')).toMatchObject({ ok: false, reason: 'loop' });
    expect(resolvePath(lookup, '/sbin/escape')).toMatchObject({ ok: false, reason: 'escape', at: '/sbin/escape' });
    // Kernel semantics on request: `..` stops at the root.
    expect(resolvePath(lookup, '/sbin/escape', { escape: 'clamp' })).toMatchObject({ ok: false, reason: 'dangling', at: '/etc' });
    expect(resolvePath(lookup, '/usr/lib/systemd/systemd/x')).toMatchObject({ ok: false, reason: 'not-dir' });
    expect(resolvePath(lookup, '/sbin/init', { followLast: false })).toMatchObject({ ok: true, path: '/sbin/init' });
  });
});

describe('diagnose stage on real images', () => {
  it('finds nothing wrong with the Debian root', async () => {
    const image = await imageWithout('good', []);
    const started = Date.now();
    const out = await diagnose(image);
    // Only what it found is asserted: speed is for benchmarks, not a timed unit test.
    console.log(`diagnose stage on the Debian root: ${Date.now() - started} ms`);
    expect(out.findings).toEqual([]);
    expect(out.status).toBe('passed');
    expect(out.details).toMatchObject({ mode: 'boot', init: '/usr/lib/systemd/systemd', machine: 'x86_64' });
  });

  it('reads file bytes out of the image rootless', async () => {
    const image = join(tmp, 'good.img');
    const files = await readImageFiles(image, ['/usr/lib/os-release', '/etc/hostname-does-not-exist']);
    expect(files.get('/usr/lib/os-release')?.toString()).toBe(await readFile(join(root, 'usr/lib/os-release'), 'utf8'));
    expect(files.has('/etc/hostname-does-not-exist')).toBe(false);
  });

  it("reports 'no-init' without /usr/lib/systemd/systemd and /sbin/init", async () => {
    const image = await imageWithout('no-init', ['usr/lib/systemd/systemd', 'usr/sbin/init']);
    const out = await diagnose(image);
    expect(out.status).toBe('failed');
    expect(out.findings.map((f) => f.code)).toEqual(['no-init']);
    expect(out.findings[0].message).toMatch(/^no init: none of \/sbin\/init, \/usr\/lib\/systemd\/systemd, \/lib\/systemd\/systemd exists in the image; install systemd-sysv/);
    expect(primaryCause(out.findings)).toBe(out.findings[0].message);
    // With a command the init does not matter.
    const exec = await diagnose(image, { nspawnCommand: ['/usr/bin/true'] });
    expect(exec.findings).toEqual([]);
    expect(exec.details).toMatchObject({ mode: 'exec' });
  });

  it("reports 'no-init' naming a dangling /sbin/init", async () => {
    const image = await imageWithout('dangling-init', ['usr/lib/systemd/systemd']);
    const out = await diagnose(image);
    expect(out.findings.map((f) => f.code)).toEqual(['no-init']);
    expect(out.findings[0].message).toContain('/sbin/init is a dangling symlink');
  });

  it("reports 'no-os-release' without /etc/os-release and /usr/lib/os-release", async () => {
    const image = await imageWithout('no-os-release', ['etc/os-release', 'usr/lib/os-release']);
    const out = await diagnose(image);
    expect(out.findings.map((f) => f.code)).toEqual(['no-os-release']);
    expect(out.findings[0].message).toMatch(/^no os-release: neither \/etc\/os-release nor \/usr\/lib\/os-release exists/);
  });

  it("reports 'no-os-release' for a dangling /etc/os-release", async () => {
    const image = await imageWithout('dangling-os-release', ['usr/lib/os-release']);
    const out = await diagnose(image);
    expect(out.findings.map((f) => f.code)).toEqual(['no-os-release']);
    expect(out.findings[0].message).toContain('/etc/os-release is a dangling symlink');
  });

  it("reports 'missing-library' for a library deleted deep in systemd's dependencies", async () => {
    // libzstd is needed by libsystemd-shared (found through systemd's RUNPATH), not by systemd itself.
    const image = await imageWithout('no-zstd', ['usr/lib/x86_64-linux-gnu/libzstd.so.1.5.4']);
    const out = await diagnose(image);
    expect(out.findings.map((f) => f.code)).toEqual(['missing-library']);
    expect(out.findings[0]).toMatchObject({ expected: 'libzstd.so.1', path: expect.stringMatching(/\.so/) });
    expect(out.findings[0].message).toMatch(/^missing library: libzstd\.so\.1, needed by \S+, is not in the image's library path/);
  });

  it("reports 'missing-library' for a library only the RUNPATH can find", async () => {
    const image = await imageWithout('no-core', ['usr/lib/x86_64-linux-gnu/systemd/libsystemd-core-252.so']);
    const out = await diagnose(image);
    expect(out.findings.map((f) => f.code)).toEqual(['missing-library']);
    expect(out.findings[0]).toMatchObject({ expected: 'libsystemd-core-252.so', path: '/usr/lib/systemd/systemd' });
    expect(out.findings[0].message).toContain('/usr/lib/x86_64-linux-gnu/systemd');
  });

  it("reports 'init-wrong-arch' with both machines", async () => {
    const sd = join(root, 'usr/lib/systemd/systemd');
    const image = await imageWithout('wrong-arch', [], async () => {
      const orig = await readFile(sd);
      const patched = Buffer.from(orig);
      patched.writeUInt16LE(183, 18);
      await writeFile(sd, patched);
      return () => writeFile(sd, orig);
    });
    const out = await diagnose(image);
    expect(out.findings.map((f) => f.code)).toEqual(['init-wrong-arch']);
    expect(out.findings[0]).toMatchObject({ expected: { machine: 62, name: 'x86_64' }, actual: { machine: 183, name: 'aarch64' } });
    expect(out.findings[0].message).toContain('aarch64');
    expect(out.findings[0].message).toContain('x86_64');
  });

  it("reports 'broken-usr-merge' first when /lib64 dangles", async () => {
    const image = await imageWithout('no-usr-lib64', ['usr/lib64']);
    const out = await diagnose(image);
    const codes = out.findings.map((f) => f.code);
    expect(codes).toContain('broken-usr-merge');
    expect(codes).toContain('missing-interpreter');
    expect(out.findings.find((f) => f.code === 'broken-usr-merge')).toMatchObject({ path: '/lib64', actual: 'usr/lib64' });
    expect(primaryCause(out.findings)).toMatch(/^broken usr-merge: \/lib64 -> usr\/lib64 dangles/);
  });

  it('checks the exec-mode command of a busybox image, and no init', async () => {
    const bb = join(tmp, 'bb');
    await makeBusyboxTree(bb);
    const image = join(tmp, 'bb.img');
    await makeImage(bb, image, 16);
    expect((await diagnose(image, { nspawnCommand: ['/usr/bin/busybox', 'true'] })).findings).toEqual([]);
    expect((await diagnose(image, { nspawnCommand: ['busybox', 'true'] })).findings).toEqual([]);
    const missing = await diagnose(image, { nspawnCommand: ['/usr/bin/env', 'true'] });
    expect(missing.findings.map((f) => f.code)).toEqual(['command-not-found']);
    const noInit = await diagnose(image);
    expect(noInit.findings.map((f) => f.code)).toEqual(['no-init']);
    // Nothing will boot it: no init check.
    expect((await diagnose(image, { skip: new Set(['nspawn']) })).findings).toEqual([]);
  });
});

describe('primaryCause', () => {
  it('picks the finding that explains the others', () => {
    expect(primaryCause([])).toBeUndefined();
    expect(
      primaryCause([
        { code: 'unit-failed', message: 'u' },
        { code: 'missing-library', message: 'lib' },
        { code: 'something-else', message: 'x' },
      ]),
    ).toBe('lib');
    expect(primaryCause([{ code: 'something-else', message: 'x' }])).toBe('x');
  });
});

describe('what nspawn tolerates but a kernel boot does not (warnings)', () => {
  it('fstab: a device other than the image warns, unless nofail or noauto; the image itself (UUID, LABEL) and pseudo filesystems do not', () => {
    const text = [
      '# comment',
      'UUID=0badc0de-0000-4000-8000-000000000000 /data ext4 defaults 0 2',
      'UUID=11111111-2222-4333-8444-555555555555 / ext4 defaults 0 1',
      'LABEL=root /self ext4 defaults 0 0',
      'LABEL="other" /other ext4 defaults 0 0',
      '/dev/vdb /spare ext4 nofail 0 2',
      'PARTUUID=abcd /boot vfat noauto 0 0',
      'proc /proc proc defaults 0 0',
      'tmpfs /tmp tmpfs defaults 0 0',
    ].join('\n');
    const w = fstabWarnings(text, { uuid: '11111111-2222-4333-8444-555555555555', label: 'root' });
    expect(w.map((f) => [f.code, f.field, f.actual])).toEqual([
      ['fstab-device-missing', '/data', 'UUID=0badc0de-0000-4000-8000-000000000000'],
      ['fstab-device-missing', '/other', 'LABEL="other"'],
    ]);
    expect(w[0].message).toMatch(/^\/etc\/fstab line 2 mounts UUID=0badc0de-\S+ on \/data, a device that is not this image/);
  });

  it('fstab: a read-only / is read', () => {
    expect(fstabRootReadOnly('UUID=x / ext4 ro,noatime 0 1\n')).toBe(true);
    expect(fstabRootReadOnly('UUID=x / ext4 defaults 0 1\nUUID=y /data ext4 ro 0 2\n')).toBe(false);
  });
});

describe('default.target through the unit folders', () => {
  const e = (path: string, type: ManifestEntry['type'], target?: string, size?: number): ManifestEntry => ({ path, type, mode: '0644', uid: 0, gid: 0, target, size });
  const base = [e('/', 'dir'), e('/etc', 'dir'), e('/etc/systemd', 'dir'), e('/etc/systemd/system', 'dir'), e('/usr', 'dir'), e('/usr/lib', 'dir'), e('/usr/lib/systemd', 'dir'), e('/usr/lib/systemd/system', 'dir'), e('/lib', 'symlink', 'usr/lib'), e('/dev', 'dir'), e('/dev/null', 'char')];
  const check = (...more: ManifestEntry[]) => checkDefaultTarget(manifestLookup(makeManifest([...base, ...more])));

  it('follows an alias by name when its link dangles, as systemd does', () => {
    // /etc/.../default.target -> /nowhere/multi-user.target dangles, but multi-user.target is in /usr/lib/systemd/system.
    expect(check(e('/etc/systemd/system/default.target', 'symlink', '/nowhere/multi-user.target'), e('/usr/lib/systemd/system/multi-user.target', 'file', undefined, 10))).toEqual([]);
    expect(check(e('/usr/lib/systemd/system/default.target', 'symlink', 'graphical.target'), e('/usr/lib/systemd/system/graphical.target', 'file', undefined, 10))).toEqual([]);
  });

  it('names a missing, a dangling and a masked default.target', () => {
    expect(check().map((f) => [f.code, f.path])).toEqual([['default-target-missing', '/etc/systemd/system/default.target']]);
    const dangling = check(e('/etc/systemd/system/default.target', 'symlink', '/lib/systemd/system/nosuch.target'));
    expect(dangling[0].message).toMatch(/^default\.target does not resolve \(\/etc\/systemd\/system\/default\.target -> \/lib\/systemd\/system\/nosuch\.target; no nosuch\.target in any unit folder\)/);
    expect(check(e('/etc/systemd/system/default.target', 'symlink', '/dev/null')).map((f) => f.code)).toEqual(['default-target-masked']);
  });
});
