// The cached VM image, checked before each use:
//   <cache>/vm-<recipe hash>/{root.img, vmlinuz, initrd.img, meta.json, checked.json}
// meta.json records each file's size and sha256 when the image is built;
// checked.json the stat of each file when its hash was last found right, so
// that the ~650 MiB root is hashed again only when it changed.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';
import { log } from '../log.js';
import { loadRecipe, recipeHash, type VmRecipe } from './recipe.js';

export interface VmImage {
  /** The recipe hash: the cache key. */
  hash: string;
  dir: string;
  /** ext4 root, /dev/vda in the guest. Attach it with snapshot=on: it must never change. */
  root: string;
  kernel: string;
  initrd: string;
  kernelVersion: string;
  recipe: VmRecipe;
  /** This call built the image (false: cache hit). */
  built: boolean;
}

/** Size and sha256 of a cached file, written when the VM image is built. */
export interface FileSum {
  size: number;
  sha256: string;
}

export interface Meta {
  hash: string;
  kernelVersion: string;
  sizeMb: number;
  buildMs: number;
  builtAt: string;
  /** root.img, vmlinuz, initrd.img. Absent in caches built before the check existed: see adoptLegacy(). */
  files?: Record<string, FileSum>;
}

/** Where part-image keeps what it builds once: PART_IMAGE_CACHE, else ~/.cache/part-image. */
export function vmCacheRoot(): string {
  return process.env.PART_IMAGE_CACHE || join(homedir(), '.cache', 'part-image');
}

export function paths(dir: string) {
  return { root: join(dir, 'root.img'), kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), meta: join(dir, 'meta.json'), checked: join(dir, 'checked.json') };
}

export const CACHED_FILES = ['root.img', 'vmlinuz', 'initrd.img'] as const;

export async function sha256Of(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

export async function fileSums(dir: string): Promise<Record<string, FileSum>> {
  const out: Record<string, FileSum> = {};
  for (const name of CACHED_FILES) out[name] = { size: (await stat(join(dir, name))).size, sha256: await sha256Of(join(dir, name)) };
  return out;
}

/** What a file looked like when its hash was last found right: a change of any of these means hashing it again. */
export const statKey = (st: { size: number; mtimeMs: number; ctimeMs: number; ino: number }) => `${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.ino}`;

export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, `${JSON.stringify(value, null, 2)}\n`);
  await rename(tmp, file);
}

/**
 * A cache built before sizes and hashes were recorded: its root.img must be
 * the size meta.json names and the kernel and initrd non-empty; then its
 * hashes are recorded now, and checked from then on.
 */
async function adoptLegacy(dir: string, meta: Meta): Promise<string | undefined> {
  const p = paths(dir);
  const root = await stat(p.root);
  if (root.size !== meta.sizeMb * 1024 * 1024) return `root.img is ${root.size} bytes, but meta.json says ${meta.sizeMb} MiB`;
  for (const f of [p.kernel, p.initrd]) if ((await stat(f)).size === 0) return `${basename(f)} is empty`;
  meta.files = await fileSums(dir);
  await writeJsonAtomic(p.meta, meta);
  log.info(`VM: recorded the sizes and sha256 of the cached VM image ${dir}`);
  return undefined;
}

export type CacheState =
  | { state: 'missing' }
  | { state: 'damaged'; why: string }
  | { state: 'ok'; image: VmImage };

/**
 * The cached VM image, checked: each file's size always (a stat), its sha256
 * when its size, mtime, ctime or inode changed since the last check that
 * found it right (checked.json); hashing the ~650 MiB root takes 3-30 s here,
 * too slow for every boot stage.
 */
export async function checkCached(dir: string, hash: string, recipe: VmRecipe): Promise<CacheState> {
  const p = paths(dir);
  let meta: Meta;
  try {
    meta = JSON.parse(await readFile(p.meta, 'utf8')) as Meta;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'missing' };
    return { state: 'damaged', why: `meta.json cannot be read: ${(err as Error).message}` };
  }
  if (meta.hash !== hash) return { state: 'missing' };
  try {
    if (!meta.files) {
      const why = await adoptLegacy(dir, meta);
      if (why) return { state: 'damaged', why };
    }
    const files = meta.files!;
    const checked = (JSON.parse(await readFile(p.checked, 'utf8').catch(() => '{}')) ?? {}) as Record<string, string>;
    let changed = false;
    for (const name of CACHED_FILES) {
      const want = files[name];
      if (!want) return { state: 'damaged', why: `meta.json records no sha256 for ${name}` };
      const st = await stat(join(dir, name));
      if (st.size !== want.size) return { state: 'damaged', why: `${name} is ${st.size} bytes, but was built with ${want.size} (truncated?)` };
      if (checked[name] === statKey(st)) continue;
      const got = await sha256Of(join(dir, name));
      if (got !== want.sha256) return { state: 'damaged', why: `${name} has sha256 ${got.slice(0, 12)}..., but was built with ${want.sha256.slice(0, 12)}...` };
      checked[name] = statKey(st);
      changed = true;
    }
    if (changed) await writeJsonAtomic(p.checked, checked).catch(() => undefined);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { state: 'damaged', why: code === 'ENOENT' ? `a file is missing: ${(err as NodeJS.ErrnoException).path ?? ''}` : (err as Error).message };
  }
  return { state: 'ok', image: { hash, dir, root: p.root, kernel: p.kernel, initrd: p.initrd, kernelVersion: meta.kernelVersion, recipe, built: false } };
}

export async function readCached(dir: string, hash: string, recipe: VmRecipe): Promise<VmImage | undefined> {
  const c = await checkCached(dir, hash, recipe);
  return c.state === 'ok' ? c.image : undefined;
}

/** The cached VM image for the recipe, or undefined; never builds (for doctor). */
export async function cachedVmImage(recipePath?: string): Promise<VmImage | undefined> {
  const c = await cachedVmImageState(recipePath);
  return c.state === 'ok' ? c.image : undefined;
}

/** The state of the cached VM image for the recipe (for doctor): ok, damaged (with why) or missing. Never builds. */
export async function cachedVmImageState(recipePath?: string): Promise<CacheState> {
  const recipe = await loadRecipe(recipePath);
  const hash = recipeHash(recipe);
  return checkCached(join(vmCacheRoot(), `vm-${hash}`), hash, recipe);
}

