// Manifest files: valid JSON, one entry per line, fixed key order, sorted by
// path, so that the bytes are stable and git diffs read well.
import { readFile } from 'node:fs/promises';
import type { Manifest, ManifestEntry } from '../types.js';
import { makeManifest, normalizeEntry } from './entry.js';
import { InputError } from '../errors.js';
import { schemaCheck } from '../schema.js';

export const MANIFEST_FORMAT = 'part-image-manifest/1';

export interface SerializeOptions {
  /** Drop these fields from every entry (volatile ones such as mtime). */
  omit?: readonly (keyof ManifestEntry)[];
}

export function serializeManifest(manifest: Manifest, opts: SerializeOptions = {}): string {
  const omit = new Set(opts.omit ?? []);
  const lines = manifest.entries.map((e) => {
    let n = normalizeEntry(e) as unknown as Record<string, unknown>;
    if (omit.size > 0) {
      n = { ...n }; // normalizeEntry() may give the entry itself
      for (const k of omit) delete n[k];
    }
    return JSON.stringify(n);
  });
  return `{"format":"${MANIFEST_FORMAT}","entries":[\n${lines.join(',\n')}\n]}\n`;
}

export function parseManifest(text: string, source = 'manifest'): Manifest {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new InputError(`${source} is not valid JSON: ${(err as Error).message}`, 'Regenerate it with `part-image manifest`.');
  }
  const d = data as { format?: string; entries?: ManifestEntry[] };
  if (d.format !== MANIFEST_FORMAT || !Array.isArray(d.entries)) {
    throw new InputError(`${source} is not a part-image manifest (expected "format": "${MANIFEST_FORMAT}")`,
      'Regenerate it with `part-image manifest PATH > FILE`.');
  }
  const problems = schemaCheck('manifest')(data);
  if (problems.length) {
    throw new InputError(`${source} does not match schema/manifest.schema.json:\n  ${problems.join('\n  ')}`,
      'Fix the entries named above, or regenerate the file with `part-image manifest PATH > FILE`.');
  }
  try {
    return makeManifest(d.entries);
  } catch (err) {
    throw new InputError(`${source}: ${(err as Error).message}`, 'Each path may appear once; regenerate the file with `part-image manifest`.');
  }
}

export async function readManifestFile(path: string): Promise<Manifest> {
  return parseManifest(await readFile(path, 'utf8'), path);
}

/** True when `text` looks like a serialized manifest (cheap sniff on the first bytes). */
export function looksLikeManifest(head: string): boolean {
  return head.startsWith(`{"format":"${MANIFEST_FORMAT}"`);
}
