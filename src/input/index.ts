// The read stage: turns a directory, a tar or a Raptor layer stack into the
// manifest model plus a map of where each file's bytes live.
import { stat } from 'node:fs/promises';
import type { InputTree } from '../types.js';
import type { Scope } from '../cleanup.js';
import { InputError } from '../errors.js';

export interface ReadInputOptions {
  /** Raptor target to pick from raptor.json when it lists several (--target). */
  target?: string;
  /** Hash file contents (default true). */
  hash?: boolean;
}

export async function readInput(path: string, scope: Scope, opts: ReadInputOptions = {}): Promise<InputTree> {
  const st = await stat(path).catch(() => {
    throw new InputError(`input not found: ${path}`, 'Give --input a directory, a .tar/.tar.gz archive, or a Raptor layer stack (a folder with raptor.json).');
  });
  if (st.isDirectory()) {
    if (await stat(`${path}/raptor.json`).then(() => true, () => false)) {
      const { readLayerTree } = await import('./layers.js');
      return readLayerTree(path, scope, opts);
    }
    const { readDirTree } = await import('./dir.js');
    return readDirTree(path, opts);
  }
  if (st.isFile()) {
    const { readTarTree } = await import('./tar.js');
    return readTarTree(path, scope, opts);
  }
  throw new InputError(`input is neither a directory nor a file: ${path}`);
}
