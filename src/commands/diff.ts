import type { Command } from './common.js';
import { loadManifest } from '../source/load.js';
import { diffManifests } from '../manifest/diff.js';
import { diffSummary, diffToJson, formatDiffText } from '../manifest/diff-format.js';
import { quietCause, readWithProgress } from './common.js';
import { log } from '../log.js';
import { isLostFound } from '../stages/diff.js';
import { UsageError } from '../errors.js';
import { checkedJson } from '../schema.js';

export const diffCommand: Command = {
  name: 'diff',
  summary: 'compare two images, trees or manifests; exit 1 if they differ',
  usage: `part-image diff A B [--format text|json] [--json] [--compare-mtime] [--no-hash] [--target NAME]

  A and B are each an ext4 image (raw, qcow2 or vmdk), a directory, a tar, a Raptor layer stack or a
  manifest file (a golden file too). B is compared against A. /lost+found is left out when only one
  side has it: mke2fs makes it, trees do not have it.
  Text output, one block per path in path order, then a summary line:
    - PATH  TYPE, only in A
    + PATH  TYPE, only in B
    ~ PATH
          FIELD  VALUE-IN-A -> VALUE-IN-B
  Hashes are cut to 16 hex digits and long xattr values to 16 bytes in text; --format json (or
  --json) gives every value whole, with a summary by code (schema/diff.schema.json).
  Exit 0 when they are the same, 1 when they differ, 2 when an argument cannot be read.
  -q prints no listing: only, when they differ, one summary line on stderr (--json still prints the JSON).

Examples:
  part-image diff rootfs.tar part.img
  part-image diff golden/demo.manifest.json demo.img --format json
  part-image diff old.img new.img --compare-mtime`,
  options: {
    format: { type: 'string' },
    json: { type: 'boolean' },
    'compare-mtime': { type: 'boolean' },
    'no-hash': { type: 'boolean' },
    target: { type: 'string' },
  },
  contradictions: [['json', 'format', (v) => v.format === 'json']],
  positionals: [2, 2],
  async run(v, [a, b]) {
    const format = v.json ? 'json' : ((v.format as string | undefined) ?? 'text');
    if (format !== 'text' && format !== 'json') throw new UsageError(`unknown diff format "${format}"`, 'Use --format text or --format json.');
    const hash = !v['no-hash'];
    const target = v.target as string | undefined;
    const ma = await readWithProgress(`A ${a}`, (scope) => loadManifest(a, scope, { hash, target }));
    const mb = await readWithProgress(`B ${b}`, (scope) => loadManifest(b, scope, { hash, target }));
    const deltas = diffManifests(ma.manifest, mb.manifest, {
      compareMtime: Boolean(v['compare-mtime']),
      ignoreContent: !hash,
      ignoreExtra: isLostFound,
    }).filter((d) => !(d.code === 'missing' && isLostFound(d.path)));
    if (format === 'text' && log.verbosity === 'quiet') {
      // -q: no listing; a difference is said in one line on stderr, as every command's -q does.
      quietCause(deltas.length ? `${a} and ${b} differ: ${diffSummary(deltas)}` : undefined);
    } else if (format === 'json') {
      const json = diffToJson(deltas, { name: a, kind: ma.kind, entries: ma.manifest.entries.length }, { name: b, kind: mb.kind, entries: mb.manifest.entries.length });
      process.stdout.write(checkedJson('diff', { format: 'part-image-diff/1', ...json }));
    } else if (deltas.length === 0) {
      process.stdout.write(`same: ${ma.manifest.entries.length} entries in A (${ma.kind}), ${mb.manifest.entries.length} in B (${mb.kind})\n`);
    } else {
      process.stdout.write(`--- A: ${a} (${ma.kind}, ${ma.manifest.entries.length} entries)\n+++ B: ${b} (${mb.kind}, ${mb.manifest.entries.length} entries)\n\n`);
      process.stdout.write(formatDiffText(deltas));
    }
    return deltas.length === 0 ? 0 : 1;
  },
};
