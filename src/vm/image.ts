// The VM's root image, built once per recipe and kept in the cache directory
// (see cache.ts for its layout and checks). mmdebstrap makes a tar of the
// recipe's Debian root (with the recipe's files added by a customize hook);
// part-image's own builder turns that tar into the ext4 root image, the same
// way it builds the images it verifies; the kernel and initrd are copied out
// of the tree for qemu's -kernel/-initrd.
//
// The build happens in a sibling directory that is renamed into place only
// when complete (meta.json written last), so a crash never leaves a half
// image behind a valid name. The build lock (lock.ts) makes concurrent
// callers (two test files, two CI jobs on one cache) wait for one build
// instead of running two. A cache hit is a stat and a small JSON read.
//
// The build directory and the lock are released by a Scope, so that an
// interrupt (SIGINT/SIGTERM: bin.ts closes every live scope, then exits)
// leaves neither behind. A process killed outright leaves them; the next
// builder takes such a lock over and removes the build directories left
// beside it.
import { copyFile, mkdir, readdir, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { isShuttingDown, withScope, type Scope } from '../cleanup.js';
import { EnvironmentError, ToolError } from '../errors.js';
import { log } from '../log.js';
import { readTarTree } from '../input/tar.js';
import { buildRawImage } from '../build/index.js';
import { mmdebstrap } from '../tools/mmdebstrap.js';
import { fileText, loadRecipe, recipeHash, type VmRecipe } from './recipe.js';
import { CACHED_FILES, checkCached, fileSums, paths, readCached, statKey, vmCacheRoot, type Meta, type VmImage } from './cache.js';
import { acquireVmLock, OWNERLESS_STALE_MS } from './lock.js';

export { cachedVmImage, cachedVmImageState, vmCacheRoot, type CacheState, type VmImage } from './cache.js';

const MMDEBSTRAP_TIMEOUT_MS = 30 * 60_000;

/** The VM image for the recipe: from the cache, or built now (about a minute) and cached. */
export async function ensureVmImage(recipePath?: string): Promise<VmImage> {
  const recipe = await loadRecipe(recipePath);
  const hash = recipeHash(recipe);
  const cacheRoot = vmCacheRoot();
  const dir = join(cacheRoot, `vm-${hash}`);
  const first = await checkCached(dir, hash, recipe);
  if (first.state === 'ok') return first.image;
  if (first.state === 'damaged') log.info(`VM: the cached VM image ${dir} is damaged (${first.why}): rebuilding it`);

  await mkdir(cacheRoot, { recursive: true });
  // The scope is live while the lock is held: an interrupt closes it, which
  // removes the build directory, then the lock.
  const other = await withScope(async (scope) => {
    const lock = await acquireVmLock(`${dir}.lock`, scope, () => readCached(dir, hash, recipe).then(Boolean));
    // Built by another part-image while this one waited for the lock.
    const again = await readCached(dir, hash, recipe);
    if (!lock || again) return again;
    await removeLeftovers(dir);
    await build(recipe, hash, dir, scope);
    return undefined;
  });
  if (other) return other;
  const built = await readCached(dir, hash, recipe);
  if (!built) throw new EnvironmentError(`the VM image in ${dir} is incomplete right after its build`);
  return { ...built, built: true };
}

/** With the lock held: build directories and broken locks that killed processes left beside `dir`. */
async function removeLeftovers(dir: string): Promise<void> {
  const base = basename(dir);
  const names = await readdir(dirname(dir)).catch(() => [] as string[]);
  for (const name of names) {
    const path = join(dirname(dir), name);
    if (name.startsWith(`${base}.build-`) || name.startsWith(`${base}.lock.stale-`)) {
      log.info(`VM: removing ${path}, left by an interrupted build`);
      await rm(path, { recursive: true, force: true });
    } else if (name.startsWith(`${base}.lock.new-`)) {
      // Another process may be about to rename it into place: only old ones.
      const age = Date.now() - (await stat(path).then((s) => s.mtimeMs, () => Date.now()));
      if (age > OWNERLESS_STALE_MS) await rm(path, { recursive: true, force: true });
    }
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

async function build(recipe: VmRecipe, hash: string, dir: string, outer: Scope): Promise<void> {
  const started = Date.now();
  log.info(`VM: building the VM root image ${hash} (Debian ${recipe.suite}; once per recipe, about a minute)`);
  const work = `${dir}.build-${process.pid}`;
  // Registered before it exists: an interrupt at any point removes it
  // (after a complete build it has been renamed to `dir`, and this is a no-op).
  // Retries: on an interrupt, mmdebstrap may still be writing into it for a moment.
  outer.defer(`remove ${work}`, () => rm(work, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }));
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  try {
    await withScope(async (scope) => {
      const overlay = join(work, 'overlay');
      const tar = join(work, 'root.tar');
      await writeOverlay(recipe, overlay);
      await log.step('mmdebstrap (VM root)', () => mmdebstrap(recipe, overlay, tar, MMDEBSTRAP_TIMEOUT_MS));
      const { sizeMb, kernelVersion } = await imageFromTar(recipe, tar, paths(work), scope);
      await rm(tar, { force: true });
      await rm(overlay, { recursive: true, force: true });
      // Sizes and hashes: a cache truncated or changed later is found and rebuilt (checkCached).
      const files = await fileSums(work);
      const meta: Meta = { hash, kernelVersion, sizeMb, buildMs: Date.now() - started, builtAt: new Date().toISOString(), files };
      await writeFile(paths(work).meta, `${JSON.stringify(meta, null, 2)}\n`);
      const checked: Record<string, string> = {};
      for (const name of CACHED_FILES) checked[name] = statKey(await stat(join(work, name)));
      await writeFile(paths(work).checked, `${JSON.stringify(checked, null, 2)}\n`);
    });
    await rm(dir, { recursive: true, force: true });
    await rename(work, dir);
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    // The VM is part of the host's equipment: a failed build means the boot
    // stages cannot run here (exit 3), not that the image under test is bad.
    if (err instanceof EnvironmentError || isShuttingDown()) throw err;
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
