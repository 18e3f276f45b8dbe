import type { Command } from './common.js';
import { withScope } from '../cleanup.js';
import { loadManifest } from '../source/load.js';
import { serializeManifest } from '../manifest/serialize.js';
import { toMtree } from '../manifest/mtree.js';
import { schemaCheck } from '../schema.js';
import { UsageError } from '../errors.js';

export const manifestCommand: Command = {
  name: 'manifest',
  summary: 'print the manifest of an image, a directory, a tar or a layer stack (JSON or mtree)',
  usage: `part-image manifest PATH [--format json|mtree] [--json] [--no-hash] [--no-xattrs] [--mounted] [--target NAME]

  PATH is an ext4 image (raw, qcow2 or vmdk; read rootless), a directory, a .tar/.tar.gz, a Raptor
  layer stack, or a manifest file.
  --format json (the default; --json for short): one entry per line, sorted by path, fixed key
    order, checked against schema/manifest.schema.json. It diffs well in git, and with mtime left
    out it is what --golden files hold.
  --format mtree: an mtree(5) specification with full paths and the keywords type, mode, uid,
    gid, size, sha256digest, link, device, nlink and go-mtree's xattr.NAME=BASE64. Names are
    vis(3)-encoded in octal (\\040 for a space). NetBSD mtree and bsdtar do not know the xattr.*
    keyword and stop on it: add --no-xattrs for them.
  --no-hash leaves file hashes out (faster; sizes are still listed).
  --mounted reads an image through a read-only loop mount (root) instead of debugfs: the
    kernel's view, to cross-check the rootless reader. Both give the same manifest.

Examples:
  part-image manifest part.img > part.manifest.json
  part-image manifest rootfs.tar --no-hash
  part-image manifest part.img --format mtree --no-xattrs > part.mtree
  mount -o loop,ro part.img /mnt && mtree -f part.mtree -p /mnt     # NetBSD mtree checks the tree
  bsdtar -tvf part.mtree                                           # libarchive reads it as an archive`,
  options: {
    format: { type: 'string' },
    json: { type: 'boolean' },
    'no-hash': { type: 'boolean' },
    'no-xattrs': { type: 'boolean' },
    mounted: { type: 'boolean' },
    target: { type: 'string' },
  },
  positionals: [1, 1],
  async run(v, [path]) {
    const format = v.json ? 'json' : ((v.format as string | undefined) ?? 'json');
    if (format !== 'json' && format !== 'mtree') throw new UsageError(`unknown manifest format "${format}"`, 'Use --format json or --format mtree.');
    if (v['no-xattrs'] && format !== 'mtree') throw new UsageError('--no-xattrs applies to --format mtree only', 'The JSON manifest always carries xattrs.');
    const hash = !v['no-hash'];
    const { manifest } = await withScope((scope) => loadManifest(path, scope, { hash, target: v.target as string | undefined, mounted: Boolean(v.mounted) }));
    if (format === 'mtree') {
      process.stdout.write(toMtree(manifest, { hash, xattrs: !v['no-xattrs'] }));
      return 0;
    }
    const text = serializeManifest(manifest);
    const problems = schemaCheck('manifest')(JSON.parse(text));
    if (problems.length) throw new Error(`internal error: the manifest does not match schema/manifest.schema.json: ${problems.join('; ')}`);
    process.stdout.write(text);
    return 0;
  },
};
