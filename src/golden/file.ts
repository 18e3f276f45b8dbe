// Golden manifest files: the serialized manifest of an accepted image, kept in
// git. They are byte-stable (sorted, fixed key order, one entry per line) and
// leave out what changes from build to build without a change of the tree.
import { open, readFile, rename, rm } from 'node:fs/promises';
import { isShuttingDown, withScope } from '../cleanup.js';
import { InterruptedError } from '../errors.js';
import type { Manifest, ManifestEntry } from '../types.js';
import { makeManifest } from '../manifest/entry.js';
import { serializeManifest } from '../manifest/serialize.js';
import { schemaCheck } from '../schema.js';

/**
 * Fields a golden file leaves out. Only mtime is volatile: a rebuild stamps
 * directories and clamped files with the build time (or SOURCE_DATE_EPOCH).
 * Everything else is a property of the tree. /lost+found is kept: mke2fs
 * creates it the same way every time (a root-owned 0700 directory), so its
 * presence and mode are as stable as any other entry.
 */
export const GOLDEN_OMIT = ['mtime'] as const satisfies readonly (keyof ManifestEntry)[];

export function goldenText(manifest: Manifest): string {
  return serializeManifest(manifest, { omit: GOLDEN_OMIT });
}

/** The golden view of a manifest: what a golden file of it holds. */
export function goldenView(manifest: Manifest): Manifest {
  return makeManifest(manifest.entries.map((e) => {
    const copy = { ...e };
    for (const k of GOLDEN_OMIT) delete copy[k];
    return copy;
  }));
}

export type GoldenRead =
  | { ok: true; manifest: Manifest; text: string; canonical: boolean }
  | { ok: false; code: 'golden-missing' | 'golden-invalid'; message: string };

/** Reads and checks a golden file against schema/manifest.schema.json; never throws for a bad file. */
export async function readGoldenFile(path: string): Promise<GoldenRead> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      return { ok: false, code: 'golden-missing', message: `golden file ${path} does not exist; create it with --update-golden` };
    }
    return { ok: false, code: 'golden-invalid', message: `cannot read golden file ${path}: ${(err as Error).message}` };
  }
  return parseGoldenText(text, path);
}

export function parseGoldenText(text: string, path: string): GoldenRead {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    return { ok: false, code: 'golden-invalid', message: `golden file ${path} is not JSON: ${(err as Error).message}` };
  }
  const problems = schemaCheck('manifest')(data);
  if (problems.length) {
    return { ok: false, code: 'golden-invalid', message: `golden file ${path} does not match schema/manifest.schema.json:\n${problems.join('\n')}` };
  }
  let manifest: Manifest;
  try {
    manifest = makeManifest((data as { entries: ManifestEntry[] }).entries);
  } catch (err) {
    return { ok: false, code: 'golden-invalid', message: `golden file ${path}: ${(err as Error).message}` };
  }
  // A file that is valid but not written the canonical way (hand edits, CRLF
  // from a checkout) would churn on the next --update-golden: say so.
  return { ok: true, manifest, text, canonical: serializeManifest(manifest) === text };
}

/**
 * Writes atomically: a temporary file beside `path`, synced, then renamed
 * over it, so that a crash never leaves half a golden file in git's way. The
 * temporary file is removed by a Scope: an interrupt (SIGINT/SIGTERM, which
 * closes every live scope) mid-write leaves nothing behind either.
 */
export async function writeGoldenFile(path: string, manifest: Manifest): Promise<string> {
  const text = goldenText(manifest);
  const problems = schemaCheck('manifest')(JSON.parse(text));
  if (problems.length) throw new Error(`internal error: the golden manifest does not match its schema: ${problems.join('; ')}`);
  const tmp = `${path}.tmp-${process.pid}`;
  return withScope(async (scope) => {
    let writing: Promise<void> | undefined;
    // Waits for a write in flight: removing the file before it is created would leave it behind.
    scope.defer(`remove ${tmp}`, async () => {
      await writing?.catch(() => undefined);
      await rm(tmp, { force: true });
    });
    writing = (async () => {
      if (isShuttingDown()) throw new InterruptedError('signal');
      const fh = await open(tmp, 'w');
      try {
        await fh.writeFile(text);
        await fh.sync();
      } finally {
        await fh.close();
      }
      if (isShuttingDown()) throw new InterruptedError('signal');
      await rename(tmp, path);
    })();
    await writing;
    return text;
  });
}
