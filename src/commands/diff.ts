import type { Command } from './common.js';
import { withScope } from '../cleanup.js';
import { loadManifest } from '../manifest/load.js';
import { deltaMessage, diffManifests } from '../manifest/diff.js';
import { isLostFound } from '../stages/diff.js';
import { UsageError } from '../errors.js';

export const diffCommand: Command = {
  name: 'diff',
  summary: 'compare two images, trees or manifests; exit 1 if they differ',
  usage: `part-image diff A B [--format text|json] [--compare-mtime] [--no-hash]

  A and B are each an ext4 image, a directory, a tar, a Raptor layer stack or a manifest file.
  Differences are reported as B against A (A is the expected side). /lost+found is ignored.

Examples:
  part-image diff rootfs.tar part.img
  part-image diff golden/example.manifest.json part.img --format json`,
  options: {
    format: { type: 'string' },
    json: { type: 'boolean' },
    'compare-mtime': { type: 'boolean' },
    'no-hash': { type: 'boolean' },
  },
  positionals: [2, 2],
  async run(v, [a, b]) {
    const format = v.json ? 'json' : ((v.format as string | undefined) ?? 'text');
    if (format !== 'text' && format !== 'json') throw new UsageError(`unknown diff format "${format}"`, 'Use --format text or --format json.');
    const hash = !v['no-hash'];
    const [ma, mb] = await withScope(async (scope) => [await loadManifest(a, scope, { hash }), await loadManifest(b, scope, { hash })]);
    const deltas = diffManifests(ma.manifest, mb.manifest, {
      compareMtime: Boolean(v['compare-mtime']),
      ignoreContent: !hash,
      ignoreExtra: isLostFound,
    }).filter((d) => !(d.code === 'missing' && isLostFound(d.path)));
    if (format === 'json') {
      process.stdout.write(`${JSON.stringify({ same: deltas.length === 0, a, b, differences: deltas }, null, 2)}\n`);
    } else if (deltas.length === 0) {
      process.stdout.write(`same: ${ma.manifest.entries.length} entries\n`);
    } else {
      for (const d of deltas) process.stdout.write(`${d.code.padEnd(8)} ${deltaMessage(d)}\n`);
      process.stdout.write(`${deltas.length} difference(s)\n`);
    }
    return deltas.length === 0 ? 0 : 1;
  },
};
