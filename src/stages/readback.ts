// readback stage: the image's full manifest, read rootless through debugfs.
// An image debugfs cannot read as the kernel would (a damaged inode, extent
// tree, directory or superblock) fails the stage with an `unreadable` finding
// that names what could not be read; it is a verdict on the image, not an
// error of part-image.
import { readImageManifest } from '../image/debugfs-reader.js';
import { UnreadableImageError } from '../errors.js';
import type { Stage, StageOutcome } from './context.js';
import { NO_OPTIONS } from './options.js';

export const readbackStage: Stage = {
  name: 'readback',
  tools: ['debugfs'],
  runs: 'rootless',
  options: NO_OPTIONS,
  summary: 'read the whole image back rootless (debugfs): types, modes, owners, xattrs, content hashes',
  async run(ctx) {
    try {
      const manifest = await readImageManifest(ctx.image, { hash: true, name: ctx.imageName });
      ctx.imageManifest = manifest;
      const files = manifest.entries.filter((e) => e.type === 'file').length;
      return { status: 'passed', findings: [], details: { entries: manifest.entries.length, files } };
    } catch (err) {
      if (!(err instanceof UnreadableImageError)) throw err;
      ctx.imageUnreadable = err;
      return unreadableOutcome(err);
    }
  },
};

/** What any stage that needs the image's files reports when they cannot be read. */
export function unreadableOutcome(err: UnreadableImageError): StageOutcome {
  return { status: 'failed', findings: [err.finding] };
}
