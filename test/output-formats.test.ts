// Every output format qemu-img writes (Raptor's builder passes OUTPUT_FORMAT
// straight to qemu-img): each conversion is checked with qemu-img compare
// against the verified raw image, and the file qemu-img reads back is of
// that format. An unknown format is exit 2, listing the valid ones. Also
// Raptor's book example of a --layers mount, built through the CLI.
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { OUTPUT_FORMATS } from '../src/build/convert.js';

let work: string;
let tree: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-formats-all-'));
  tree = join(work, 'tree');
  await mkdir(join(tree, 'data'), { recursive: true });
  await writeFile(join(tree, 'data/blob'), Buffer.alloc(300 * 1024, 1));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('OUTPUT_FORMAT', () => {
  it('lists the formats qemu-img writes', () => {
    expect([...OUTPUT_FORMATS].sort()).toEqual(['qcow', 'qcow2', 'qed', 'raw', 'vdi', 'vhdx', 'vmdk', 'vpc']);
  });

  for (const format of OUTPUT_FORMATS.filter((f) => f !== 'raw')) {
    it(`${format}: converted from the verified raw image and checked with qemu-img compare`, async () => {
      const out = join(work, `part.${format}`);
      const json = join(work, `${format}.json`);
      const r = await runCli(['build', '--input', tree, '--output', out, '--free-mb', '2', '--report-json', json], { env: { OUTPUT_FORMAT: format } });
      expect(r.exitCode).toBe(0);
      const report = JSON.parse(await readFile(json, 'utf8'));
      expect(report.stages.find((s: { name: string }) => s.name === 'convert')).toMatchObject({ status: 'passed' });
      const info = JSON.parse((await execa('qemu-img', ['info', '-f', format, '--output=json', out])).stdout);
      expect(info.format).toBe(format);
    });
  }

  it('refuses an unknown format with exit 2, listing the valid ones', async () => {
    const r = await runCli(['build', '--input', tree, '--output', join(work, 'x.iso')], { env: { OUTPUT_FORMAT: 'iso' } });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/unknown output format "iso"/);
    expect(r.stderr).toMatch(/raw, qcow2, qcow, qed, vdi, vhdx, vmdk, vpc/);
  });
});

describe("Raptor's book: a --layers mount builds (book/src/mount-types/layers.md)", () => {
  it('two targets sharing a layer, with a whiteout: --target picks one, none is exit 2', async () => {
    const mount = join(work, 'layers');
    const DEB = 'index.docker.io-library-debian-trixie-675DE2C3A4D8CD82';
    const FL = 'file-lister-16689594BA5D2989';
    const FLO = 'file-lister-output-2CFDE4FEBD507157';
    for (const [p, text] of [[`${DEB}/etc/motd`, 'debian\n'], [`${DEB}/srv/list`, 'x\n'], [`${FL}/srv/file-lister`, 'l\n'], [`${FLO}/srv/out`, 'o\n']]) {
      await mkdir(join(mount, p, '..'), { recursive: true });
      await writeFile(join(mount, p), text);
    }
    await execa('mknod', [join(mount, FLO, 'srv/list'), 'c', '0', '0']);
    await writeFile(join(mount, 'raptor.json'), JSON.stringify({ targets: ['file-lister', 'file-lister-output'], layers: { 'file-lister-output': [DEB, FLO], 'file-lister': [DEB, FL] } }, null, 2));
    const none = await runCli(['build', '--input', mount, '--output', join(work, 'l.img')]);
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toMatch(/lists several targets: file-lister, file-lister-output/);
    const out = join(work, 'flo.img');
    const r = await runCli(['build', '--input', mount, '--target', 'file-lister-output', '--output', out, '--free-mb', '2']);
    expect(r.exitCode).toBe(0);
    const m = await runCli(['manifest', out]);
    const paths = m.stdout.split('\n').filter((l) => l.startsWith('{"path"')).map((l) => JSON.parse(l.replace(/,$/, '')).path);
    expect(paths).toEqual(['/', '/etc', '/etc/motd', '/lost+found', '/srv', '/srv/out']);
    await execa('e2fsck', ['-fn', out]);
  });
});
