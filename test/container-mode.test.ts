// Builder-container mode: `part-image build` inside a Raptor builder
// container, whose mounts are /input (the overlay) and /output/disk.img (a
// file). PART_IMAGE_BUILDER_ROOT=DIR stands in for "/" so that the test does
// not need to own /input; one test bind-mounts the output file as Raptor
// does, where a rename onto it fails with EBUSY.
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { skipBoot } from './helpers/stages.js';
import { runCli } from './helpers/cli.js';
import { isRoot, makeSampleTree } from './helpers/trees.js';
import { sniffFile } from '../src/source/load.js';
import { Scope } from '../src/cleanup.js';
import { copyAcceptedImage } from '../src/raptor/container.js';

// The boot stages need an init in the tree; these tests are about the mounts.
const SKIP = skipBoot();

let work: string;
let sample: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-container-test-'));
  sample = join(work, 'sample');
  await makeSampleTree(sample);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** A fake container root: DIR/input holding a copy of the sample tree, DIR/output/disk.img as Raptor creates it (empty). */
async function builderRoot(name: string): Promise<string> {
  const root = join(work, name);
  await mkdir(join(root, 'output'), { recursive: true });
  await execa('cp', ['-a', sample, join(root, 'input')]);
  await writeFile(join(root, 'output/disk.img'), '');
  return root;
}

async function fakeQemuImgCompareMismatch(): Promise<string> {
  const bin = join(work, 'fake-bin');
  await mkdir(bin, { recursive: true });
  const real = (await execa('sh', ['-c', 'command -v qemu-img'])).stdout.trim();
  await writeFile(join(bin, 'qemu-img'), `#!/bin/sh\nif [ "$1" = compare ]; then echo 'Content mismatch at offset 0!'; exit 1; fi\nexec ${real} "$@"\n`);
  await chmod(join(bin, 'qemu-img'), 0o755);
  return bin;
}

describe('builder-container mode', () => {
  it('builds /input into /output/disk.img with no --input or --output, honouring FREE_MB from the env', async () => {
    const root = await builderRoot('plain');
    const json = join(work, 'plain.json');
    const r = await runCli(['build', ...SKIP, '--report-json', json], { env: { PART_IMAGE_BUILDER_ROOT: root, FREE_MB: '8' } });
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toContain(`builder-container mode: input ${root}/input, output ${root}/output/disk.img`);
    expect(r.stdout).toContain(`ACCEPTED: ${root}/output/disk.img`);
    expect(await sniffFile(join(root, 'output/disk.img'))).toBe('image');
    // Nothing but the image is left in the output folder: the staging folder is gone.
    expect(await readdir(join(root, 'output'))).toEqual(['disk.img']);
    const report = JSON.parse(await readFile(json, 'utf8'));
    expect(report).toMatchObject({ accepted: true, input: `${root}/input`, output: `${root}/output/disk.img`, image: `${root}/output/disk.img` });
    const free = report.stages.find((s: { name: string }) => s.name === 'freespace');
    expect(free.details.freeMb).toBeGreaterThanOrEqual(8);
    expect(free.details.freeMb).toBeLessThan(16);
    // The copied image is the verified one: it verifies against the input on its own.
    const v = await runCli(['verify', join(root, 'output/disk.img'), '--input', join(root, 'input'), ...SKIP]);
    expect(v.exitCode).toBe(0);
  });

  it('honours SIZE_MB exactly and keeps the copy sparse', async () => {
    const root = await builderRoot('sized');
    const r = await runCli(['build', ...SKIP], { env: { PART_IMAGE_BUILDER_ROOT: root, SIZE_MB: '40' } });
    expect(r.exitCode).toBe(0);
    const st = await stat(join(root, 'output/disk.img'));
    expect(st.size).toBe(40 * 1024 * 1024);
    expect(st.blocks * 512).toBeLessThan(st.size / 2);
  });

  it('writes into a bind-mounted output file, as Raptor mounts it (rename onto it fails with EBUSY), in OUTPUT_FORMAT', async () => {
    expect(isRoot, 'this test bind-mounts a file: run it as root, as CI does').toBe(true);
    const root = await builderRoot('mounted');
    const hostFile = join(work, 'host-part.img');
    await writeFile(hostFile, '');
    await execa('mount', ['--bind', hostFile, join(root, 'output/disk.img')]);
    try {
      // The condition this mode exists for: the output is a mount point.
      await writeFile(join(root, 'output/probe'), 'x');
      await expect(rename(join(root, 'output/probe'), join(root, 'output/disk.img'))).rejects.toMatchObject({ code: 'EBUSY' });
      await rm(join(root, 'output/probe'));
      const r = await runCli(['build', ...SKIP], { env: { PART_IMAGE_BUILDER_ROOT: root, FREE_MB: '8', OUTPUT_FORMAT: 'qcow2' } });
      expect(r.stderr).not.toMatch(/error/i);
      expect(r.exitCode).toBe(0);
    } finally {
      await execa('umount', [join(root, 'output/disk.img')]);
    }
    // The bytes landed in the host file behind the mount.
    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', hostFile])).stdout);
    expect(info.format).toBe('qcow2');
    const v = await runCli(['verify', hostFile, '--input', join(root, 'input'), ...SKIP]);
    expect(v.exitCode).toBe(0);
  });

  it('leaves the output untouched when the image is rejected, keeping it as disk.img.rejected (exit 1)', async () => {
    const root = await builderRoot('rejected');
    await writeFile(join(root, 'output/disk.img'), 'previous content\n');
    const bin = await fakeQemuImgCompareMismatch();
    const r = await runCli(['build', ...SKIP], { env: { PART_IMAGE_BUILDER_ROOT: root, OUTPUT_FORMAT: 'qcow2', FREE_MB: '8', PATH: `${bin}:${process.env.PATH}` } });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain(`REJECTED: ${root}/output/disk.img.rejected`);
    expect(await readFile(join(root, 'output/disk.img'), 'utf8')).toBe('previous content\n');
    expect(await sniffFile(join(root, 'output/disk.img.rejected'))).toBe('image');
    expect((await readdir(join(root, 'output'))).sort()).toEqual(['disk.img', 'disk.img.rejected']);
  });

  it('refuses an accepted image that cannot fit on the output filesystem before touching the output (exit 3)', async () => {
    expect(isRoot, 'this test mounts a tmpfs: run it as root, as CI does').toBe(true);
    const root = await builderRoot('tiny');
    // The output file lives on a 256 KiB tmpfs and is bind-mounted as Raptor does.
    const tiny = join(work, 'tiny-fs');
    await mkdir(tiny, { recursive: true });
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', tiny]);
    try {
      await writeFile(join(tiny, 'part.img'), 'previous content\n');
      await execa('mount', ['--bind', join(tiny, 'part.img'), join(root, 'output/disk.img')]);
      try {
        const r = await runCli(['build', ...SKIP], { env: { PART_IMAGE_BUILDER_ROOT: root, SIZE_MB: '40' } });
        expect(r.exitCode).toBe(3);
        expect(r.stderr).toMatch(/no room for the accepted image on the output's filesystem: it needs [\d.]+ MiB, .*disk\.img can get 0\.\d MiB; the output was left as it was/);
        expect(r.stderr).not.toMatch(/internal error|was truncated/);
        expect(await readFile(join(root, 'output/disk.img'), 'utf8')).toBe('previous content\n');
      } finally {
        await execa('umount', [join(root, 'output/disk.img')]);
      }
      expect(await readFile(join(tiny, 'part.img'), 'utf8')).toBe('previous content\n');
    } finally {
      await execa('umount', [tiny]);
    }
    // The staging folder is gone.
    expect(await readdir(join(root, 'output'))).toEqual(['disk.img']);
  });

  it('truncates the output to 0 bytes, with a warning, when the copy of the accepted image does not finish (interrupt)', async () => {
    const src = join(work, 'accepted.img');
    await writeFile(src, Buffer.alloc(96 * 1024 * 1024, 0xab));
    const dest = join(work, 'interrupted-out.img');
    await writeFile(dest, 'previous content\n');
    const warn = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const scope = new Scope();
      const copy = copyAcceptedImage(scope, src, dest);
      copy.catch(() => undefined);
      // Wait until some of the image has landed, then close the scope as shutdown() does on SIGINT/SIGTERM.
      for (let i = 0; i < 10_000 && (await stat(dest)).size <= 'previous content\n'.length; i++) await new Promise((r) => setImmediate(r));
      expect((await stat(dest)).size).toBeGreaterThan(0);
      expect(await scope.close()).toEqual([]);
      await expect(copy).rejects.toThrow(/cannot copy the accepted image to .*: the copy was stopped/);
      expect((await stat(dest)).size).toBe(0);
      const said = warn.mock.calls.map((c) => String(c[0])).join('');
      expect(said).toContain(`warning: ${dest}: the output was truncated: the copy of the accepted image did not finish`);
    } finally {
      warn.mockRestore();
    }
  });

  it('a finished copy is left alone when its scope closes', async () => {
    const src = join(work, 'small-accepted.img');
    const bytes = Buffer.alloc(3 * 1024 * 1024);
    bytes.fill(7, 4096, 8192);
    bytes.fill(9, 2 * 1024 * 1024 + 100, 2 * 1024 * 1024 + 200);
    await writeFile(src, bytes);
    const dest = join(work, 'small-out.img');
    await writeFile(dest, 'x'.repeat(5 * 1024 * 1024));
    const scope = new Scope();
    await copyAcceptedImage(scope, src, dest);
    expect(await scope.close()).toEqual([]);
    expect((await readFile(dest)).equals(bytes)).toBe(true);
    // Holes kept at 4 KiB: two data blocks.
    expect((await stat(dest)).blocks * 512).toBeLessThanOrEqual(4 * 4096);
  });

  it('uses the mount only for the flag not given: --input elsewhere, output to /output/disk.img', async () => {
    const root = await builderRoot('half');
    const other = join(work, 'other');
    await mkdir(join(other, 'etc'), { recursive: true });
    await writeFile(join(other, 'etc/hostname'), 'other\n');
    const r = await runCli(['build', '--input', other, ...SKIP], { env: { PART_IMAGE_BUILDER_ROOT: root, FREE_MB: '4' } });
    expect(r.exitCode).toBe(0);
    const m = await runCli(['manifest', join(root, 'output/disk.img'), '--no-hash']);
    expect(m.stdout).toContain('"/etc/hostname"');
    expect(m.stdout).not.toContain('"/usr/bin/tool"');
  });

  it('says what is missing when PART_IMAGE_BUILDER_ROOT has no input folder (exit 2)', async () => {
    const root = join(work, 'empty-root');
    await mkdir(root, { recursive: true });
    const r = await runCli(['build'], { env: { PART_IMAGE_BUILDER_ROOT: root } });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`PART_IMAGE_BUILDER_ROOT=${root}, but ${root}/input is not a directory`);
  });

  it('outside a builder container, a missing --input is a usage error that mentions container mode (exit 2)', async () => {
    expect(existsSync('/input') && existsSync('/output'), 'this host looks like a builder container itself').toBe(false);
    const r = await runCli(['build', '--output', join(work, 'x.img')], { env: { PART_IMAGE_BUILDER_ROOT: '' } });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/build needs --input PATH/);
    expect(r.stderr).toMatch(/Raptor builder container \(mounts \/input and \/output\/disk.img\)/);
    expect(r.stderr).toMatch(/PART_IMAGE_BUILDER_ROOT=DIR/);
  });
});
