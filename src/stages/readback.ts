// readback stage: the image's full manifest, read rootless through debugfs.
import { readImageManifest } from '../image/debugfs-reader.js';
import type { Stage } from './context.js';

export const readbackStage: Stage = {
  name: 'readback',
  tools: ['debugfs'],
  runs: 'rootless',
  summary: 'read the whole image back rootless (debugfs): types, modes, owners, xattrs, content hashes',
  async run(ctx) {
    const manifest = await readImageManifest(ctx.image, { hash: true });
    ctx.imageManifest = manifest;
    const files = manifest.entries.filter((e) => e.type === 'file').length;
    return { status: 'passed', findings: [], details: { entries: manifest.entries.length, files } };
  },
};
