// The VM's root image, built once per recipe and kept in the cache directory:
//   <cache>/vm-<recipe hash>/{root.img, vmlinuz, initrd.img, meta.json}
// mmdebstrap makes a tar of the recipe's Debian root (with the recipe's files
// added by a customize hook); part-image's own builder turns that tar into the
// ext4 root image, the same way it builds the images it verifies; the kernel
// and initrd are copied out of the tree for qemu's -kernel/-initrd.
//
// The build happens in a sibling directory that is renamed into place only
// when complete (meta.json written last), so a crash never leaves a half
// image behind a valid name. A lock directory makes concurrent callers (two
// test files, two CI jobs on one cache) wait for one build instead of
// running two. A cache hit is a stat and a small JSON read.
import { copyFile, mkdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { cancelSignal, withScope, type Scope } from '../cleanup.js';
import { EnvironmentError, ToolError } from '../errors.js';
import { run, shellQuote } from '../exec.js';
import { log } from '../log.js';
import { readTarTree } from '../input/tar.js';
import { buildRawImage } from '../build/index.js';
import { fileText, loadRecipe, recipeHash, type VmRecipe } from './recipe.js';

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

interface Meta {
  hash: string;
  kernelVersion: string;
  sizeMb: number;
  buildMs: number;
  builtAt: string;
}

const MMDEBSTRAP_TIMEOUT_MS = 30 * 60_000;
const LOCK_WAIT_MS = 40 * 60_000;

/** Where part-image keeps what it builds once: PART_IMAGE_CACHE, else ~/.cache/part-image. */
export function vmCacheRoot(): string {
  return process.env.PART_IMAGE_CACHE || join(homedir(), '.cache', 'part-image');
}

function paths(dir: string) {
  return { root: join(dir, 'root.img'), kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), meta: join(dir, 'meta.json') };
}

async function readCached(dir: string, hash: string, recipe: VmRecipe): Promise<VmImage | undefined> {
  const p = paths(dir);
  try {
    const meta = JSON.parse(await readFile(p.meta, 'utf8')) as Meta;
    if (meta.hash !== hash) return undefined;
    await Promise.all([stat(p.root), stat(p.kernel), stat(p.initrd)]);
    return { hash, dir, root: p.root, kernel: p.kernel, initrd: p.initrd, kernelVersion: meta.kernelVersion, recipe, built: false };
  } catch {
    return undefined;
  }
}

/** The cached VM image for the recipe, or undefined; never builds (for doctor). */
export async function cachedVmImage(recipePath?: string): Promise<VmImage | undefined> {
  const recipe = await loadRecipe(recipePath);
  const hash = recipeHash(recipe);
  return readCached(join(vmCacheRoot(), `vm-${hash}`), hash, recipe);
}

/** The VM image for the recipe: from the cache, or built now (about a minute) and cached. */
export async function ensureVmImage(recipePath?: string): Promise<VmImage> {
  const recipe = await loadRecipe(recipePath);
  const hash = recipeHash(recipe);
  const cacheRoot = vmCacheRoot();
  const dir = join(cacheRoot, `vm-${hash}`);
  const hit = await readCached(dir, hash, recipe);
  if (hit) return hit;

  await mkdir(cacheRoot, { recursive: true });
  const lock = `${dir}.lock`;
  await acquireLock(lock, () => readCached(dir, hash, recipe).then(Boolean));
  try {
    const again = await readCached(dir, hash, recipe);
    if (again) return again;
    await build(recipe, hash, dir);
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
  const built = await readCached(dir, hash, recipe);
  if (!built) throw new EnvironmentError(`the VM image in ${dir} is incomplete right after its build`);
  return { ...built, built: true };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** mkdir is atomic: whoever creates the lock directory builds; the others wait for it to go. */
async function acquireLock(lock: string, done: () => Promise<boolean>): Promise<void> {
  const start = Date.now();
  let told = false;
  for (;;) {
    try {
      await mkdir(lock);
      await writeFile(join(lock, 'pid'), String(process.pid));
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = Number(await readFile(join(lock, 'pid'), 'utf8').catch(() => ''));
    const age = Date.now() - (await stat(lock).then((s) => s.mtimeMs, () => Date.now()));
    // A lock without a pid is only being created; give its owner a moment.
    if ((pid && !alive(pid)) || (!pid && age > 10_000)) {
      await rm(lock, { recursive: true, force: true });
      continue;
    }
    if (await done()) return;
    if (Date.now() - start > LOCK_WAIT_MS) {
      throw new EnvironmentError(`waited ${LOCK_WAIT_MS / 60_000} min for another part-image (pid ${pid}) to build the VM image`, `Remove ${lock} if that process is gone.`);
    }
    if (!told) {
      told = true;
      log.info(`VM: waiting for another part-image (pid ${pid}) to finish building the VM image`);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** The recipe's files and symlinks, laid out under `dir` as they go into the root. */
export async function writeOverlay(recipe: VmRecipe, dir: string): Promise<void> {
  for (const [path, f] of Object.entries(recipe.files)) {
    const target = join(dir, path);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, fileText(f), { mode: parseInt(f.mode, 8) });
  }
  for (const [path, to] of Object.entries(recipe.symlinks)) {
    const target = join(dir, path);
    await mkdir(dirname(target), { recursive: true });
    await symlink(to, target);
  }
}

/** The argv after `mmdebstrap` that writes the recipe's root to `tar`. Pure. */
export function buildMmdebstrapArgs(recipe: VmRecipe, overlay: string, tar: string): string[] {
  // Copy the overlay in as root:root, without touching the modes of the
  // directories it shares with Debian (/etc, /usr/local/lib).
  const hook = `tar -C ${shellQuote(overlay)} --owner=0 --group=0 -cf - . | tar -C "$1" --no-overwrite-dir -xpf -`;
  return [
    '--quiet',
    `--variant=${recipe.variant}`,
    `--architectures=${recipe.architecture}`,
    `--include=${recipe.include.join(',')}`,
    `--customize-hook=${hook}`,
    recipe.suite,
    tar,
    ...recipe.mirrors,
  ];
}

async function build(recipe: VmRecipe, hash: string, dir: string): Promise<void> {
  const started = Date.now();
  log.info(`VM: building the VM root image ${hash} (Debian ${recipe.suite}; once per recipe, about a minute)`);
  const work = `${dir}.build-${process.pid}`;
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  try {
    await withScope(async (scope) => {
      const overlay = join(work, 'overlay');
      const tar = join(work, 'root.tar');
      await writeOverlay(recipe, overlay);
      await log.step('mmdebstrap (VM root)', () =>
        run('mmdebstrap', buildMmdebstrapArgs(recipe, overlay, tar), {
          timeoutMs: MMDEBSTRAP_TIMEOUT_MS,
          hint: 'mmdebstrap needs root (or user namespaces) and access to a Debian mirror.',
        }),
      );
      const { sizeMb, kernelVersion } = await imageFromTar(recipe, tar, paths(work), scope);
      await rm(tar, { force: true });
      await rm(overlay, { recursive: true, force: true });
      const meta: Meta = { hash, kernelVersion, sizeMb, buildMs: Date.now() - started, builtAt: new Date().toISOString() };
      await writeFile(paths(work).meta, `${JSON.stringify(meta, null, 2)}\n`);
    });
    await rm(dir, { recursive: true, force: true });
    await rename(work, dir);
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    // The VM is part of the host's equipment: a failed build means the boot
    // stages cannot run here (exit 3), not that the image under test is bad.
    if (err instanceof EnvironmentError || cancelSignal().aborted) throw err;
    const why = err instanceof ToolError ? err.message : (err as Error).message;
    throw new EnvironmentError(
      `cannot build the VM root image: ${why}`,
      'The VM image needs mmdebstrap, root (or user namespaces) and a reachable Debian mirror; `part-image doctor` shows what is missing.',
      err,
    );
  }
  log.info(`VM: VM root image ready in ${((Date.now() - started) / 1000).toFixed(0)} s (${dir})`);
}

/** Highest version first: "6.1.0-10" after "6.1.0-9". */
function compareVersionsDesc(a: string, b: string): number {
  return b.localeCompare(a, 'en', { numeric: true });
}

async function imageFromTar(
  recipe: VmRecipe,
  tar: string,
  out: { root: string; kernel: string; initrd: string },
  scope: Scope,
): Promise<{ sizeMb: number; kernelVersion: string }> {
  const tree = await log.step('read the VM root tar', () => readTarTree(tar, scope));
  const versions = tree.manifest.entries
    .filter((e) => e.type === 'file')
    .map((e) => /^\/boot\/vmlinuz-(.+)$/.exec(e.path)?.[1])
    .filter((v): v is string => v !== undefined)
    .sort(compareVersionsDesc);
  const kernelVersion = versions[0];
  const kernelBlob = kernelVersion && tree.content.get(`/boot/vmlinuz-${kernelVersion}`);
  const initrdBlob = kernelVersion && tree.content.get(`/boot/initrd.img-${kernelVersion}`);
  if (!kernelVersion || !kernelBlob || !initrdBlob) {
    throw new EnvironmentError(
      'the VM root has no /boot/vmlinuz-* with a matching /boot/initrd.img-*',
      'The recipe must include a kernel package (linux-image-cloud-amd64) and initramfs-tools.',
    );
  }
  await copyFile(kernelBlob, out.kernel);
  await copyFile(initrdBlob, out.initrd);
  const built = await log.step('build the VM root image', () =>
    buildRawImage(tree, out.root, { label: recipe.image.label, freeMb: recipe.image.freeMb, usedMb: tree.usedMb }, scope),
  );
  return { sizeMb: built.sizeMb, kernelVersion };
}
