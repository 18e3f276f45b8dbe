// A damaged VM image in the cache (issue 8, §3): truncated or with a flipped
// bit, it made every boot stage fail with exit 3 while doctor said the VM was
// fine. Now its size (always) and sha256 (when the file changed since the
// last good check) are compared with what the build recorded; doctor says
// "damaged: will be rebuilt", and the next use rebuilds it, saying so.
//
// The shared cache is never touched: its VM image is copied into a private
// PART_IMAGE_CACHE (building it first when this machine has none).
import { execa } from 'execa';
import { mkdtemp, open, readFile, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cachedVmImageState, ensureVmImage, vmCacheRoot } from '../../src/vm/image.js';
import { runCliProcess as runCli } from '../helpers/cli.js'; // the KVM verdict and VM cache are per process

let priv: string;
let dir: string;
const saved = process.env.PART_IMAGE_CACHE;

async function flipByte(file: string, at: number): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] ^= 0x01;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}

async function doctorVmLine(): Promise<string> {
  const r = await runCli(['doctor'], { env: { PART_IMAGE_CACHE: priv, PART_IMAGE_ACCEL: 'tcg' } });
  return r.stdout.split('\n').find((l) => l.startsWith('VM image:')) ?? `(no VM image line)\n${r.stdout}\n${r.stderr}`;
}

beforeAll(async () => {
  // The shared cache's image (built by whoever came first), then a private copy.
  const shared = await ensureVmImage();
  priv = await mkdtemp(join(tmpdir(), 'pi-vmcache-'));
  dir = join(priv, `vm-${shared.hash}`);
  await execa('cp', ['-r', '--sparse=always', shared.dir, dir]);
  await rm(join(dir, 'checked.json'), { force: true });
  process.env.PART_IMAGE_CACHE = priv;
  expect(vmCacheRoot()).toBe(priv);
}, 1_200_000);

afterAll(async () => {
  if (saved === undefined) delete process.env.PART_IMAGE_CACHE;
  else process.env.PART_IMAGE_CACHE = saved;
  if (priv) await rm(priv, { recursive: true, force: true });
});

describe('a damaged cached VM image', () => {
  it('a good copy is accepted, and its sizes and hashes are recorded', async () => {
    expect((await cachedVmImageState()).state).toBe('ok');
    const meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8'));
    expect(Object.keys(meta.files).sort()).toEqual(['initrd.img', 'root.img', 'vmlinuz']);
    expect(meta.files['root.img'].size).toBe((await stat(join(dir, 'root.img'))).size);
    expect(await doctorVmLine()).toBe('VM image:        cached');
  });

  it('a flipped bit in root.img (same size) is found by its hash; doctor says it will be rebuilt', async () => {
    const root = join(dir, 'root.img');
    const middle = Math.floor((await stat(root)).size / 2);
    await flipByte(root, middle);
    const s = await cachedVmImageState();
    expect(s.state).toBe('damaged');
    expect(s.state === 'damaged' && s.why).toMatch(/root\.img has sha256 .* but was built with/);
    expect(await doctorVmLine()).toMatch(/^VM image: +cached VM image damaged: will be rebuilt on first use \(root\.img has sha256/);
    // Flipped back: the same bytes as built, so the hash matches again.
    await flipByte(root, middle);
    expect((await cachedVmImageState()).state).toBe('ok');
  });

  it('a flipped bit in the kernel is found too', async () => {
    const kernel = join(dir, 'vmlinuz');
    await flipByte(kernel, 4096);
    const s = await cachedVmImageState();
    expect(s.state === 'damaged' && s.why).toMatch(/vmlinuz has sha256/);
    await flipByte(kernel, 4096);
    expect((await cachedVmImageState()).state).toBe('ok');
  });

  it('a truncated root.img is found by its size, and the next use rebuilds it, saying so', async () => {
    const root = join(dir, 'root.img');
    const size = (await stat(root)).size;
    await truncate(root, size - 4096);
    const s = await cachedVmImageState();
    expect(s.state === 'damaged' && s.why).toMatch(new RegExp(`root\\.img is ${size - 4096} bytes, but was built with ${size} \\(truncated\\?\\)`));
    expect(await doctorVmLine()).toMatch(/cached VM image damaged: will be rebuilt/);

    const logged: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      logged.push(String(chunk));
      return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stderr.write;
    let image;
    try {
      image = await ensureVmImage();
    } finally {
      process.stderr.write = write;
    }
    expect(image.built).toBe(true);
    expect(logged.join('')).toMatch(/VM: the cached VM image .* is damaged \(root\.img is \d+ bytes, but was built with \d+ \(truncated\?\)\): rebuilding it/);
    expect((await cachedVmImageState()).state).toBe('ok');
    expect(await doctorVmLine()).toBe('VM image:        cached');
  }, 1_200_000);
});
