// The portable lint on real busybox images, read back rootless.
import { mkdtemp, rm, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Scope } from '../src/cleanup.js';
import { makeManifest } from '../src/manifest/entry.js';
import type { ManifestEntry } from '../src/types.js';
import { matchingUnits, portableLintStage, portablePrefix, unitMatchesPrefix } from '../src/stages/portable-lint.js';
import { makeBusyboxTree, makeImage, stageContext } from './fixtures/boot/images.js';

const tmp = await mkdtemp(join(tmpdir(), 'part-image-portable-lint-'));
afterAll(() => rm(tmp, { recursive: true, force: true }));

const UNIT = '[Unit]\nDescription=demo\n[Service]\nExecStart=/usr/bin/busybox sh -c "echo hello from demo"\n';

async function portableImage(name: string, unitName: string | undefined, edit?: (root: string) => Promise<void>): Promise<string> {
  const root = join(tmp, `${name}.tree`);
  await makeBusyboxTree(root);
  if (unitName) await writeFile(join(root, 'usr/lib/systemd/system', unitName), UNIT);
  if (edit) await edit(root);
  const image = join(tmp, `${name}.img`);
  await makeImage(root, image, 16);
  return image;
}

async function lint(image: string, imageName: string, portable = false) {
  const scope = new Scope();
  try {
    return await portableLintStage.run(stageContext(image, scope, { portable }, imageName));
  } finally {
    await scope.close();
  }
}

describe('portable-lint stage', () => {
  it('passes a busybox portable image demo_1.0.raw with demo.service', async () => {
    const image = await portableImage('good', 'demo.service');
    const out = await lint(image, 'demo_1.0.raw');
    expect(out.findings).toEqual([]);
    expect(out.status).toBe('passed');
    expect(out.details).toEqual({ prefix: 'demo', units: ['/usr/lib/systemd/system/demo.service'] });
    expect((await lint(image, '/out/demo_1.0.raw', true)).status).toBe('passed');
  });

  it('fails a --portable image whose unit does not match the prefix, naming both', async () => {
    const image = await portableImage('other', 'other.service');
    const out = await lint(image, 'demo_1.0.raw', true);
    expect(out.status).toBe('failed');
    expect(out.findings.map((f) => f.code)).toEqual(['portable-no-unit']);
    const f = out.findings[0];
    expect(f.message).toContain("'demo'");
    expect(f.message).toContain('other.service');
    expect(f.actual).toEqual(['other.service']);
  });

  it('is not applicable without --portable when no unit matches', async () => {
    const image = join(tmp, 'other.img');
    const out = await lint(image, 'demo_1.0.raw', false);
    expect(out.status).toBe('skipped');
    expect(out.skippedBy).toBe('not-applicable');
    expect(out.reason).toContain("'demo'");
  });

  it('names each missing piece: machine-id, resolv.conf, os-release, API dirs, .raw name', async () => {
    const image = await portableImage('bare', 'demo.service', async (root) => {
      await rm(join(root, 'etc/machine-id'));
      await rm(join(root, 'etc/resolv.conf'));
      await rm(join(root, 'etc/os-release'));
      await rm(join(root, 'usr/lib/os-release'));
      await rm(join(root, 'var/tmp'), { recursive: true });
      await rename(join(root, 'run'), join(root, 'run-not'));
    });
    const out = await lint(image, 'demo.img');
    expect(out.status).toBe('failed');
    expect(out.findings.map((f) => `${f.code} ${f.path}`).sort()).toEqual([
      'portable-bad-name demo.img',
      'portable-missing-dir /run',
      'portable-missing-dir /var/tmp',
      'portable-missing-file /etc/machine-id',
      'portable-missing-file /etc/resolv.conf',
      'portable-no-os-release /usr/lib/os-release',
    ]);
  });
});

describe('prefix and unit matching', () => {
  it('takes the prefix up to the first _ or .raw', () => {
    expect(portablePrefix('demo_1.0.raw')).toBe('demo');
    expect(portablePrefix('/out/dir_x/demo.raw')).toBe('demo');
    expect(portablePrefix('demo-app_2_3.raw')).toBe('demo-app');
    expect(portablePrefix('demo')).toBe('demo');
    expect(portablePrefix('demo.qcow2')).toBe('demo');
  });

  it('matches PREFIX.TYPE, PREFIX-*.TYPE and PREFIX@.TYPE in the unit dirs', () => {
    const e = (path: string, type: ManifestEntry['type'] = 'file', target?: string): ManifestEntry => ({ path, type, mode: '0644', uid: 0, gid: 0, target });
    const m = makeManifest([
      e('/', 'dir'),
      e('/usr', 'dir'),
      e('/usr/lib', 'dir'),
      e('/lib', 'symlink', 'usr/lib'),
      e('/usr/lib/systemd', 'dir'),
      e('/usr/lib/systemd/system', 'dir'),
      e('/usr/lib/systemd/system/demo.service'),
      e('/usr/lib/systemd/system/demo-worker.socket'),
      e('/usr/lib/systemd/system/demo@.service'),
      e('/usr/lib/systemd/system/demonic.service'),
      e('/usr/lib/systemd/system/demo.mount'),
      e('/usr/lib/systemd/system/other.service'),
      e('/etc', 'dir'),
      e('/etc/systemd', 'dir'),
      e('/etc/systemd/system', 'dir'),
      e('/etc/systemd/system/demo-extra.timer'),
      e('/srv', 'dir'),
      e('/srv/demo.service'),
    ]);
    expect(matchingUnits(m, 'demo').map((u) => u.path)).toEqual([
      '/etc/systemd/system/demo-extra.timer',
      '/usr/lib/systemd/system/demo-worker.socket',
      '/usr/lib/systemd/system/demo.service',
      '/usr/lib/systemd/system/demo@.service',
    ]);
    expect(unitMatchesPrefix('demonic.service', 'demo')).toBe(false);
    expect(unitMatchesPrefix('demo.mount', 'demo')).toBe(false);
  });
});
