// raptor.json, as Raptor's runner writes it into a --layers mount
// (src/runner/runner.rs, MountsInfo): {"targets": [NAME, ...], "layers":
// {NAME: [bottom, ..., top]}}, each layer a folder NAME-HASH16 beside it,
// layers shared between targets. Which target to read, and whether a folder
// is such a mount at all (a root tree holding a file /raptor.json is not).
import { readFile, readdir, stat } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { InputError } from '../errors.js';

export interface LayerSelection {
  /** The chosen target, as raptor.json names it. */
  target: string;
  /** Layer folder names relative to the mount folder, bottom first. */
  layers: string[];
}

/** What Raptor's runner writes into a --layers mount (MountsInfo in src/runner/runner.rs). */
export interface RaptorMountsInfo {
  targets: string[];
  layers: Record<string, string[]>;
}

export const FORMAT_HINT =
  'raptor.json is what Raptor writes into a --layers mount: {"targets": ["NAME", ...], "layers": {"NAME": ["BOTTOM-LAYER", ..., "TOP-LAYER"]}}, ' +
  'each layer a folder beside raptor.json (docs/layer-stack.md).';

function checkLayerList(value: unknown, where: string): string[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new InputError(`${where}: the layer list must be a non-empty list of folder names`, FORMAT_HINT);
  }
  for (const name of value) {
    if (typeof name !== 'string' || name === '' || isAbsolute(name) || name.split('/').includes('..')) {
      throw new InputError(`${where}: bad layer ${JSON.stringify(name)}: layers are folder names beside raptor.json`, FORMAT_HINT);
    }
  }
  return value as string[];
}

/** The same stack in Raptor's form, for the message that refuses part-image 0.1's own forms. */
function rewriteOldForm(c: Record<string, unknown>): string | undefined {
  if (Array.isArray(c.layers) && c.targets === undefined) return JSON.stringify({ targets: ['root'], layers: { root: c.layers } });
  if (typeof c.targets === 'object' && c.targets !== null && !Array.isArray(c.targets)) {
    const t = c.targets as Record<string, { layers?: unknown }>;
    const names = Object.keys(t);
    return JSON.stringify({ targets: names, layers: Object.fromEntries(names.map((n) => [n, t[n]?.layers ?? []])) });
  }
  return undefined;
}

/** Checks a parsed raptor.json against Raptor's shape. Pure. */
export function parseMountsInfo(config: unknown, file = 'raptor.json'): RaptorMountsInfo {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new InputError(`${file}: expected a JSON object`, FORMAT_HINT);
  }
  const c = config as Record<string, unknown>;
  const old = rewriteOldForm(c);
  if (old !== undefined) {
    throw new InputError(`${file} is in part-image 0.1's own stack form, which Raptor never writes`, `Write it as Raptor does: ${old}\n${FORMAT_HINT}`);
  }
  if (!Array.isArray(c.targets) || c.targets.length === 0 || c.targets.some((t) => typeof t !== 'string' || t === '')) {
    throw new InputError(`${file}: "targets" must be a non-empty list of target names`, FORMAT_HINT);
  }
  const layers = c.layers;
  if (typeof layers !== 'object' || layers === null || Array.isArray(layers)) {
    throw new InputError(`${file}: "layers" must be an object: target name -> its layers, bottom first`, FORMAT_HINT);
  }
  const out: Record<string, string[]> = {};
  for (const t of c.targets as string[]) {
    if (!Object.hasOwn(layers, t)) throw new InputError(`${file}: target ${JSON.stringify(t)} is listed in "targets" but has no entry in "layers"`, FORMAT_HINT);
    out[t] = checkLayerList((layers as Record<string, unknown>)[t], `${file}: target ${t}`);
  }
  return { targets: [...(c.targets as string[])], layers: out };
}

/** Pick one target's layer list out of a parsed raptor.json. Pure. */
export function selectLayers(config: unknown, target?: string, file = 'raptor.json'): LayerSelection {
  const info = parseMountsInfo(config, file);
  const names = info.targets;
  let chosen: string;
  if (target !== undefined) {
    if (!names.includes(target)) {
      throw new InputError(`${file} has no target ${JSON.stringify(target)}; its targets: ${names.join(', ')}`, `Pick one with --target: ${names.join(', ')}.`);
    }
    chosen = target;
  } else if (names.length === 1) {
    chosen = names[0];
  } else {
    throw new InputError(`${file} lists several targets: ${names.join(', ')}`, `Pick one with --target, e.g. --target ${JSON.stringify(names[0])}.`);
  }
  return { target: chosen, layers: info.layers[chosen] };
}

async function parseJsonFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new InputError(`cannot read ${file}: ${(err as Error).message}`, FORMAT_HINT, err);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InputError(`${file} is not valid JSON: ${(err as Error).message}`, FORMAT_HINT, err);
  }
}

/** Read and parse `<stack>/raptor.json` and pick the layers. */
export async function readRaptorJson(stack: string, target?: string): Promise<LayerSelection> {
  const file = join(stack, 'raptor.json');
  return selectLayers(await parseJsonFile(file), target, file);
}

/** Every layer name raptor.json mentions, in any of the forms it might be written in; undefined when it names none. */
function mentionedLayers(config: unknown): Set<string> | undefined {
  if (typeof config !== 'object' || config === null) return undefined;
  const c = config as Record<string, unknown>;
  const names = new Set<string>();
  const add = (v: unknown) => {
    if (Array.isArray(v)) for (const n of v) if (typeof n === 'string') names.add(n.split('/')[0]);
  };
  add(c.layers);
  if (typeof c.layers === 'object' && c.layers !== null) for (const v of Object.values(c.layers)) add(v);
  if (typeof c.targets === 'object' && c.targets !== null && !Array.isArray(c.targets)) {
    for (const v of Object.values(c.targets)) add((v as { layers?: unknown } | null)?.layers);
  }
  return names.size ? names : undefined;
}

/**
 * Whether the folder is a layers mount: a raptor.json that names layers, and
 * nothing beside it but folders it names. A root tree with a file
 * /raptor.json (and usr/, etc/, ...) is not one. A raptor.json that is not
 * JSON counts as a stack only when the folder holds nothing but folders, so
 * that a broken stack is reported rather than built as a tree.
 */
export async function looksLikeLayerStack(path: string): Promise<boolean> {
  const names = await readdir(path).catch(() => [] as string[]);
  if (!names.includes('raptor.json')) return false;
  const others = names.filter((n) => n !== 'raptor.json');
  const st = await stat(join(path, 'raptor.json')).catch(() => undefined);
  if (!st?.isFile()) return false;
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(join(path, 'raptor.json'), 'utf8'));
  } catch {
    const dirs = await Promise.all(others.map((n) => stat(join(path, n)).then((s) => s.isDirectory(), () => false)));
    return others.length > 0 && dirs.every(Boolean) && !others.some((n) => ['usr', 'etc', 'bin', 'sbin', 'lib', 'var'].includes(n));
  }
  const layers = mentionedLayers(parsed);
  if (!layers) return false;
  return others.every((n) => layers.has(n));
}

