// Reads a Raptor `--layers` mount: the merged view of one target's layers,
// as overlayfs would show it, without mounting anything.
//
// Raptor's runner (src/runner/runner.rs, MountType::Layers) binds every layer
// of every input target at DEST/NAME-HASH16 and writes DEST/raptor.json:
//
//   {"targets": ["file-lister", "file-lister-output"],
//    "layers": {"file-lister":        ["index.docker.io-...-675DE2C3A4D8CD82", "file-lister-16689594BA5D2989"],
//               "file-lister-output": ["index.docker.io-...-675DE2C3A4D8CD82", "file-lister-output-2CFDE4FEBD507157"]}}
//
// Layers are listed bottom first and may be shared between targets. With one
// target it is the default; with several, --target picks one (else exit 2,
// listing them). The layers are merged bottom to top:
// - a path in an upper layer replaces the same path below; two directories
//   merge (the upper one's owner, mode and xattrs win, the children of both stay);
// - a character device 0/0 is a whiteout: the path and everything under it
//   in lower layers disappear;
// - a directory with xattr trusted.overlay.opaque or user.overlay.opaque = "y"
//   hides everything below it in lower layers;
// - OCI whiteouts: a file `.wh.NAME` removes NAME from lower layers, a file
//   `.wh..wh..opq` makes its directory opaque; other `.wh..wh.*` names are
//   aufs metadata and are dropped;
// - whiteouts, OCI markers and every trusted.overlay.* / user.overlay.* xattr
//   (overlayfs hides them in a merged view) never appear in the result.
// Hardlinks count only inside one layer: a group is keyed by layer + inode.
//
// A folder is read as such a mount only when it holds nothing but raptor.json
// and layer folders that raptor.json names (looksLikeLayerStack): a root tree
// that merely has a file /raptor.json is a root tree.
import { readFile, readdir, stat } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import type { ContentMap, InputTree, ManifestEntry } from '../types.js';
import type { Scope } from '../cleanup.js';
import { InputError } from '../errors.js';
import { assignHardlinks, comparePaths, makeManifest, parentPath } from '../manifest/entry.js';
import { duMegabytes, hashFiles, scanDir, type ScannedEntry } from './dir.js';
import { checkTreeLimits } from './limits.js';
import { checkApparentSize } from '../build/size.js';

export interface ReadLayersOptions {
  /** The target to read when raptor.json lists several (--target). */
  target?: string;
  /** Hash file contents (default true). */
  hash?: boolean;
  /** SIZE_MB in bytes: refuse a merged tree whose apparent size exceeds it, before hashing. */
  maxBytes?: number;
  /** Check the merged tree against ext4's limits (default true). */
  limits?: boolean;
}

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

const FORMAT_HINT =
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

const OPAQUE_NAMES = ['trusted.overlay.opaque', 'user.overlay.opaque'];
const Y_HEX = Buffer.from('y').toString('hex');
const WH = '.wh.';
const WH_OPAQUE = '.wh..wh..opq';

/** The entry a path shows in the merged view, and where it came from. */
export interface LayerWinner {
  /** Index in the layer list, 0 = bottom. */
  layer: number;
  se: ScannedEntry;
  entry: ManifestEntry;
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** The entry without overlay-private xattrs, as a merged overlay mount shows it. */
function visibleEntry(e: ManifestEntry): ManifestEntry {
  const out = { ...e };
  if (e.xattrs) {
    const kept = Object.entries(e.xattrs).filter(([n]) => !n.startsWith('trusted.overlay.') && !n.startsWith('user.overlay.'));
    if (kept.length > 0) out.xattrs = Object.fromEntries(kept);
    else delete out.xattrs;
  }
  return out;
}

/**
 * Merge scanned layers (bottom first) with overlayfs semantics. Each layer is
 * a whole tree, so an upper path always comes with its parent directories.
 */
export function mergeLayers(layers: ScannedEntry[][]): LayerWinner[] {
  const merged = new Map<string, LayerWinner>();
  // Children of each merged path: a whiteout removes one subtree, not a scan of the whole tree.
  const kids = new Map<string, Set<string>>();
  const set = (path: string, w: LayerWinner): void => {
    merged.set(path, w);
    if (path === '/') return;
    const parent = parentPath(path);
    let k = kids.get(parent);
    if (!k) kids.set(parent, (k = new Set()));
    k.add(path);
  };
  const drop = (path: string): void => {
    for (const kid of kids.get(path) ?? []) drop(kid);
    kids.delete(path);
    merged.delete(path);
    kids.get(parentPath(path))?.delete(path);
  };
  /** Drop what lower layers put at `path` (with `self`) and under it. */
  const removeLower = (path: string, layer: number, self: boolean): void => {
    const w = merged.get(path);
    if (!w) return; // Every merged path has its parent: nothing can lie under a missing one.
    if (self && w.layer < layer) {
      drop(path);
      return;
    }
    if (w.entry.type !== 'dir') return;
    // Entries of this layer under `path` were merged already (they sort before
    // the whiteout) and stay; a lower one goes with everything under it (every
    // layer is a whole tree, so nothing of this layer lies under a lower dir).
    for (const kid of [...(kids.get(path) ?? [])]) {
      if (merged.get(kid)!.layer < layer) drop(kid);
      else removeLower(kid, layer, false);
    }
  };
  for (const [layer, scanned] of layers.entries()) {
    const sorted = [...scanned].sort((a, b) => comparePaths(a.entry.path, b.entry.path));
    for (const se of sorted) {
      const e = se.entry;
      const name = e.path === '/' ? '' : baseName(e.path);
      if (name.startsWith(WH)) {
        const parent = parentPath(e.path);
        if (name === WH_OPAQUE) removeLower(parent, layer, false);
        else if (!name.startsWith(`${WH}${WH}`)) {
          const hidden = name.slice(WH.length);
          removeLower(parent === '/' ? `/${hidden}` : `${parent}/${hidden}`, layer, true);
        }
        continue;
      }
      if (e.type === 'char' && e.rdev === '0,0') {
        removeLower(e.path, layer, true);
        continue;
      }
      const below = merged.get(e.path);
      if (e.type === 'dir') {
        if (OPAQUE_NAMES.some((n) => e.xattrs?.[n] === Y_HEX)) removeLower(e.path, layer, false);
      } else if (below?.entry.type === 'dir') {
        removeLower(e.path, layer, false);
      }
      set(e.path, { layer, se, entry: visibleEntry(e) });
    }
  }
  return [...merged.values()];
}

export async function readLayerTree(path: string, _scope: Scope, opts: ReadLayersOptions = {}): Promise<InputTree> {
  const selection = await readRaptorJson(path, opts.target);
  const scans: ScannedEntry[][] = [];
  for (const name of selection.layers) {
    const dir = join(path, name);
    const st = await stat(dir).catch(() => undefined);
    if (!st?.isDirectory()) {
      throw new InputError(`layer ${name} of target ${selection.target} is not a folder: ${dir}`, FORMAT_HINT);
    }
    scans.push((await scanDir(dir)).entries);
  }
  const winners = mergeLayers(scans);
  const entries = winners.map((w) => w.entry);
  const content: ContentMap = new Map();
  const keyOf = new Map<string, string>();
  for (const w of winners) {
    if (w.entry.type !== 'file') continue;
    content.set(w.entry.path, w.se.host);
    keyOf.set(w.entry.path, `${w.layer}:${w.se.inode}`);
  }
  assignHardlinks(entries, (e) => keyOf.get(e.path));
  checkApparentSize(entries, opts.maxBytes, path);
  if (opts.hash ?? true) await hashFiles(entries, content);
  const manifest = makeManifest(entries);
  const hostOf = new Map(winners.map((w) => [w.entry.path, `${w.entry.path} (layer ${selection.layers[w.layer]}: ${w.se.host})`]));
  if (opts.limits !== false) checkTreeLimits(manifest, path, (p) => hostOf.get(p) ?? p);
  return {
    kind: 'layers',
    source: path,
    manifest,
    content,
    usedMb: duMegabytes(winners.map((w) => ({ inode: `${w.layer}:${w.se.inode}`, blocks: w.se.blocks }))),
  };
}
