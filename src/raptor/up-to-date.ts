// Raptor's "Output is up to date" (make/maker.rs run_job): a run is skipped
// when the oldest of its outputs is at least as new as the newest of its
// sources. Raptor's sources are the .rapt files (and what they COPY) of the
// builder and of each input target; part-image's are its input paths: every
// entry of a directory or layers mount (lstat mtime, links not followed), or
// the tar file itself. A missing output counts as the epoch: never up to date.
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** The newest mtime (ms) of `path` and, for a directory, of everything under it. */
export async function newestMtime(path: string): Promise<number> {
  const st = await lstat(path);
  let newest = st.mtimeMs;
  if (!st.isDirectory()) return newest;
  const stack = [path];
  while (stack.length) {
    const dir = stack.pop()!;
    for (const d of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, d.name);
      const s = await lstat(p);
      if (s.mtimeMs > newest) newest = s.mtimeMs;
      if (s.isDirectory()) stack.push(p);
    }
  }
  return newest;
}

export interface Freshness {
  upToDate: boolean;
  newestSourceMs: number;
  oldestOutputMs: number;
}

/** Raptor's rule, for outputs and sources given as paths. */
export async function checkFreshness(outputs: string[], sources: string[]): Promise<Freshness> {
  const outs = await Promise.all(outputs.map((o) => lstat(o).then((s) => s.mtimeMs, () => 0)));
  const oldestOutputMs = outs.length ? Math.min(...outs) : 0;
  let newestSourceMs = 0;
  for (const s of sources) newestSourceMs = Math.max(newestSourceMs, await newestMtime(s));
  return { upToDate: oldestOutputMs >= newestSourceMs && newestSourceMs !== 0, newestSourceMs, oldestOutputMs };
}
