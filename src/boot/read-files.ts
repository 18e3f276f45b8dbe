// Whole files out of an ext4 image, rootless, for the boot diagnosis: the
// init, its interpreter, its libraries, ld.so.conf. One debugfs process dumps
// all the files of one request.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withScope } from '../cleanup.js';
import { quoteDebugfsArg, runDebugfs } from '../tools/debugfs.js';

/** Reads file bytes by resolved image path. */
export type FileReader = (paths: readonly string[]) => Promise<Map<string, Buffer>>;

/**
 * Read whole files out of an ext4 image, rootless: one debugfs process dumps
 * all of them. `paths` must be resolved (no symlink in any component).
 * Missing paths are absent from the result.
 */
export async function readImageFiles(image: string, paths: readonly string[]): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const unique = [...new Set(paths)];
  if (!unique.length) return out;
  await withScope(async (scope) => {
    const dir = await scope.tempDir('part-image-diagnose-');
    const commands = unique.map((p, i) => `dump ${quoteDebugfsArg(p)} ${quoteDebugfsArg(join(dir, String(i)))}`);
    await runDebugfs(image, commands, { timeoutMs: 120_000 });
    await Promise.all(
      unique.map(async (p, i) => {
        const buf = await readFile(join(dir, String(i))).catch(() => undefined);
        if (buf) out.set(p, buf);
      }),
    );
  });
  return out;
}
