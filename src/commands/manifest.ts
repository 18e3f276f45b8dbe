import type { Command } from './common.js';
import { withScope } from '../cleanup.js';
import { loadManifest } from '../manifest/load.js';
import { serializeManifest } from '../manifest/serialize.js';
import { UsageError } from '../errors.js';

export const manifestCommand: Command = {
  name: 'manifest',
  summary: 'print the manifest of an image, a directory, a tar or a layer stack',
  usage: `part-image manifest PATH [--format json] [--no-hash] [--target NAME]

  PATH is an ext4 image (read rootless), a directory, a .tar/.tar.gz, a Raptor layer stack,
  or a manifest file. The JSON has one entry per line, sorted by path: it diffs well in git.

Examples:
  part-image manifest part.img > part.manifest.json
  part-image manifest rootfs.tar --no-hash`,
  options: {
    format: { type: 'string' },
    json: { type: 'boolean' },
    'no-hash': { type: 'boolean' },
    target: { type: 'string' },
  },
  positionals: [1, 1],
  async run(v, [path]) {
    const format = (v.format as string | undefined) ?? 'json';
    if (format !== 'json') throw new UsageError(`unknown manifest format "${format}"`, 'Use --format json.');
    const { manifest } = await withScope((scope) => loadManifest(path, scope, { hash: !v['no-hash'], target: v.target as string | undefined }));
    process.stdout.write(serializeManifest(manifest));
    return 0;
  },
};
