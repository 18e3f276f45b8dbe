// The read stage: turns a directory, a tar or a Raptor layer stack into the
// manifest model plus a map of where each file's bytes live. Every kind is
// checked against what an ext4 image can hold (limits.ts) before anything
// is built: a value out of range is refused by name, never changed.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { InputTree } from '../types.js';
import type { Scope } from '../cleanup.js';
import { InputError } from '../errors.js';
import { checkTreeLimits } from './limits.js';

export interface ReadInputOptions {
  /** Raptor target to pick from raptor.json when it lists several (--target). */
  target?: string;
  /** Hash file contents (default true). */
  hash?: boolean;
  /**
   * SIZE_MB, when given: a tree whose apparent size exceeds it is refused
   * while it is read, before its contents are hashed.
   */
  sizeMb?: number;
  /**
   * Check the tree against what an ext4 image can hold (limits.ts; default
   * true). Directory and layer inputs are checked here, tars by their reader
   * (which names the member); false skips the directory and layer check, for
   * callers that only describe a tree (manifest, diff).
   */
  limits?: boolean;
}

const MiB = 1024 * 1024;

export async function readInput(path: string, scope: Scope, opts: ReadInputOptions = {}): Promise<InputTree> {
  const st = await stat(path).catch(() => {
    throw new InputError(`input not found: ${path}`, 'Give --input a directory, a .tar/.tar.gz archive, or a Raptor layer stack (a folder with raptor.json).');
  });
  const maxBytes = opts.sizeMb === undefined ? undefined : opts.sizeMb * MiB;
  let tree: InputTree;
  if (st.isDirectory()) {
    const { looksLikeLayerStack } = await import('../raptor/mounts-info.js');
    if (await looksLikeLayerStack(path)) {
      const { readLayerTree } = await import('./layers.js');
      tree = await readLayerTree(path, scope, { ...opts, maxBytes });
    } else {
      const { readDirTree } = await import('../walk/dir.js');
      tree = await readDirTree(path, { ...opts, maxBytes });
      if (opts.limits !== false) checkTreeLimits(tree.manifest, path, (p) => join(path, p));
    }
  } else if (st.isFile()) {
    const { readTarTree } = await import('./tar.js');
    tree = await readTarTree(path, scope, { ...opts, maxBytes });
  } else {
    throw new InputError(`input is neither a directory nor a file: ${path}`);
  }
  const sockets = tree.manifest.entries.filter((e) => e.type === 'socket').map((e) => e.path);
  if (sockets.length) {
    const shown = sockets.slice(0, 3).join(', ') + (sockets.length > 3 ? ', ...' : '');
    tree.notes = [...(tree.notes ?? []), `${sockets.length} socket(s) left out: an image cannot hold a live socket (${shown})`];
  }
  return tree;
}
