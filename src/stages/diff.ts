// diff stage: the image manifest against the input manifest.
import { deltaToFinding, diffManifests } from '../manifest/diff.js';
import { imageManifestOf, passedOrFailed, skipped, type Stage } from './context.js';
import { OPTION } from './options.js';

/** mke2fs always creates /lost+found; it is not a difference. */
export const isLostFound = (path: string) => path === '/lost+found';

export const diffStage: Stage = {
  name: 'diff',
  tools: [],
  runs: 'rootless',
  options: { type: 'object', properties: { compareMtime: OPTION.compareMtime }, required: ['compareMtime'], additionalProperties: false },
  summary: 'compare the image with its input: ownership, modes, xattrs, content, links, devices',
  async run(ctx) {
    if (!ctx.input) return skipped('no input given to compare with (use --input)', 'not-applicable');
    const imageManifest = await imageManifestOf(ctx, { hash: true });
    // The builder leaves sockets out on purpose: they belong to a running process.
    const sockets = new Set(ctx.input.manifest.entries.filter((e) => e.type === 'socket').map((e) => e.path));
    const deltas = diffManifests(ctx.input.manifest, imageManifest, {
      compareMtime: ctx.opts.compareMtime,
      ignoreExtra: isLostFound,
    }).filter((d) => !(d.code === 'missing' && sockets.has(d.path)));
    const details: Record<string, unknown> = { compared: ctx.input.manifest.entries.length, differences: deltas.length };
    // Said, not silent: the report lists what the builder left out.
    if (sockets.size) details.socketsLeftOut = [...sockets];
    return passedOrFailed(deltas.map(deltaToFinding), details);
  },
};
