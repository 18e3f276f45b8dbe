// The VM recipe (vm/recipe.json): which Debian root the boot VM gets, which
// files part-image adds to it, and how it boots. The VM image is cached by the
// hash of the recipe, so any change to it (or to how it is built) makes a new
// image on the next run.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { EnvironmentError } from '../errors.js';

export interface RecipeFile {
  /** Octal permission bits, e.g. "0755". */
  mode: string;
  /** The file's lines; joined with "\n" and ended with one. */
  content: string[];
}

export interface VmRecipe {
  description?: string;
  suite: string;
  variant: string;
  architecture: string;
  /** mmdebstrap mirrors; empty means mmdebstrap's default (deb.debian.org). */
  mirrors: string[];
  include: string[];
  image: { label: string; freeMb: number };
  kernelCmdline: string[];
  /**
   * qemu's memory and CPUs (at most maxCpus, and no more than the host has).
   * Two: under TCG (multi-threaded) a second vCPU takes the demo's portable
   * stage from 6.9-7.9 s to 4.6-5.2 s and a Debian boot under nspawn from
   * 18-29 s to 14-17 s on this 2-core machine type (measured in one session),
   * for the work a boot does side by side (generators, services).
   */
  vm: { memoryMb: number; maxCpus: number };
  /** Absolute path in the VM root -> link target. */
  symlinks: Record<string, string>;
  /** Absolute path in the VM root -> file. */
  files: Record<string, RecipeFile>;
}

/**
 * Bumped whenever the way the image is built from the recipe changes
 * (image.ts), so that cached images made the old way are not reused.
 */
export const VM_BUILDER_VERSION = 1;

/** vm/recipe.json of this package (the same relative path from src/vm and dist/vm). */
export function defaultRecipePath(): string {
  return fileURLToPath(new URL('../../vm/recipe.json', import.meta.url));
}

function fail(path: string, why: string): never {
  throw new EnvironmentError(`the VM recipe ${path} is invalid: ${why}`, 'Restore vm/recipe.json from the part-image package.');
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

/** Checks the shape of a parsed recipe; throws EnvironmentError naming the first problem. */
export function validateRecipe(raw: unknown, path = 'recipe'): VmRecipe {
  if (typeof raw !== 'object' || raw === null) fail(path, 'not a JSON object');
  const r = raw as Record<string, unknown>;
  for (const k of ['suite', 'variant', 'architecture']) if (typeof r[k] !== 'string' || !r[k]) fail(path, `"${k}" must be a non-empty string`);
  if (!isStringArray(r.mirrors)) fail(path, '"mirrors" must be a list of strings');
  if (!isStringArray(r.include) || r.include.length === 0) fail(path, '"include" must be a non-empty list of package names');
  if (!isStringArray(r.kernelCmdline)) fail(path, '"kernelCmdline" must be a list of strings');
  const image = r.image as Record<string, unknown> | undefined;
  if (typeof image?.label !== 'string' || typeof image.freeMb !== 'number') fail(path, '"image" needs "label" (string) and "freeMb" (number)');
  const vm = r.vm as Record<string, unknown> | undefined;
  if (typeof vm?.memoryMb !== 'number' || typeof vm.maxCpus !== 'number') fail(path, '"vm" needs "memoryMb" and "maxCpus" (numbers)');
  const symlinks = (r.symlinks ?? {}) as Record<string, unknown>;
  for (const [p, t] of Object.entries(symlinks)) {
    if (!p.startsWith('/') || typeof t !== 'string') fail(path, `symlink ${p}: needs an absolute path and a string target`);
  }
  const files = (r.files ?? {}) as Record<string, unknown>;
  for (const [p, f] of Object.entries(files)) {
    const file = f as Record<string, unknown>;
    if (!p.startsWith('/') || p.includes('/../')) fail(path, `file ${p}: the path must be absolute`);
    if (typeof file?.mode !== 'string' || !/^0?[0-7]{3,4}$/.test(file.mode)) fail(path, `file ${p}: "mode" must be octal, like "0644"`);
    if (!isStringArray(file.content)) fail(path, `file ${p}: "content" must be a list of lines`);
  }
  return { ...(r as unknown as VmRecipe), symlinks: symlinks as Record<string, string>, files: files as Record<string, RecipeFile> };
}

export async function loadRecipe(path = defaultRecipePath()): Promise<VmRecipe> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new EnvironmentError(`cannot read the VM recipe ${path}: ${(err as Error).message}`, 'Restore vm/recipe.json from the part-image package.', err);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    fail(path, (err as Error).message);
  }
  return validateRecipe(raw, path);
}

/** JSON with object keys sorted at every level, so that formatting and key order do not change the hash. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/**
 * The cache key of the VM image built from `recipe`: 16 hex digits. Only what
 * goes into the image counts: the description, the kernel command line and
 * the VM's size are read at run time.
 */
export function recipeHash(recipe: VmRecipe): string {
  const { description: _d, kernelCmdline: _k, vm: _v, ...meaningful } = recipe;
  return createHash('sha256')
    .update(`part-image-vm ${VM_BUILDER_VERSION}\n`)
    .update(canonical(meaningful))
    .digest('hex')
    .slice(0, 16);
}

/** The text of a recipe file, as it lands in the VM root. */
export function fileText(f: RecipeFile): string {
  return `${f.content.join('\n')}\n`;
}
