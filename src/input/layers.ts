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
// raptor.json itself is read in raptor/mounts-info.ts; a folder is read as
// such a mount only when it holds nothing but raptor.json and layer folders
// that raptor.json names (looksLikeLayerStack there).
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContentMap, InputTree, ManifestEntry } from '../types.js';
import type { Scope } from '../cleanup.js';
import { InputError } from '../errors.js';
import { assignHardlinks, comparePaths, makeManifest, parentPath } from '../manifest/entry.js';
import { duMegabytes, scanDir, type ScannedEntry } from '../walk/dir.js';
import { hashFiles } from '../walk/hash.js';
import { checkTreeLimits } from './limits.js';
import { checkApparentSize } from '../manifest/apparent-size.js';
import { FORMAT_HINT, readRaptorJson } from '../raptor/mounts-info.js';

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
