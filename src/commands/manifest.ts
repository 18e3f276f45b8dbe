import type { Command } from './common.js';
import { readWithProgress } from './common.js';
import { loadManifest } from '../source/load.js';
import { serializeManifest } from '../manifest/serialize.js';
import { MTREE_DEFAULT_KEYWORDS, MTREE_KEYWORDS, mtreeKeywords, toMtree } from '../manifest/mtree.js';
import { schemaCheck } from '../schema.js';
import { UsageError } from '../errors.js';

export const manifestCommand: Command = {
  name: 'manifest',
  summary: 'print the manifest of an image, a directory, a tar or a layer stack (JSON or mtree)',
  usage: `part-image manifest PATH [--format json|mtree] [--json] [--no-hash] [-k|-K KEYWORDS] [--mounted] [--target NAME]

  PATH is an ext4 image (raw, qcow2 or vmdk; read rootless), a directory, a .tar/.tar.gz, a Raptor
  layer stack, or a manifest file.
  --format json (the default; --json for short): one entry per line, sorted by path, fixed key
    order, checked against schema/manifest.schema.json. It diffs well in git, and with mtime left
    out it is what --golden files hold.
  --format mtree: an mtree(5) specification in the hierarchical form go-mtree and NetBSD mtree
    write (relative names, ".." lines), modes as %#o (04755). go-mtree 0.4.4, NetBSD mtree and
    bsdtar all read it. Names are vis(3)-encoded in octal (\\040 for a space). The default
    keywords are those all three know: ${MTREE_DEFAULT_KEYWORDS.join(', ')}.
  -k, --keywords LIST      write only these keywords (type is always written), as mtree -k
  -K, --add-keywords LIST  add these to the default keywords, as mtree -K. Known: ${MTREE_KEYWORDS.join(', ')}.
    device=native,MAJOR,MINOR: NetBSD mtree and bsdtar read it; go-mtree 0.4.4 stops on it.
    xattr.NAME=BASE64 (go-mtree's): go-mtree reads it; NetBSD mtree stops on it ("unknown
    keyword"); bsdtar lists every entry but warns on each and exits 1.
  --no-xattrs  (the default now) leave out xattr.* keywords.
  --no-hash leaves file hashes out (faster; sizes are still listed).
  --mounted reads an image through a read-only loop mount (root) instead of debugfs: the
    kernel's view, to cross-check the rootless reader. Both give the same manifest.

Examples:
  part-image manifest part.img > part.manifest.json
  part-image manifest rootfs.tar --no-hash
  part-image manifest part.img --format mtree > part.mtree
  mount -o loop,ro part.img /mnt && mtree -f part.mtree -p /mnt     # NetBSD mtree checks the tree
  bsdtar -tvf part.mtree                                           # libarchive reads it as an archive
  part-image manifest part.img --format mtree -K device            # device numbers for NetBSD mtree and bsdtar
  part-image manifest part.img --format mtree -K xattr             # file capabilities for go-mtree`,
  options: {
    format: { type: 'string' },
    json: { type: 'boolean' },
    'no-hash': { type: 'boolean' },
    keywords: { type: 'string', short: 'k' },
    'add-keywords': { type: 'string', short: 'K' },
    'no-xattrs': { type: 'boolean' },
    mounted: { type: 'boolean' },
    target: { type: 'string' },
  },
  contradictions: [['json', 'format', (v) => v.format === 'json']],
  positionals: [1, 1],
  async run(v, [path]) {
    const format = v.json ? 'json' : ((v.format as string | undefined) ?? 'json');
    if (format !== 'json' && format !== 'mtree') throw new UsageError(`unknown manifest format "${format}"`, 'Use --format json or --format mtree.');
    for (const flag of ['no-xattrs', 'keywords', 'add-keywords']) {
      if (v[flag] !== undefined && format !== 'mtree') throw new UsageError(`--${flag} applies to --format mtree only`, 'The JSON manifest always carries every field.');
    }
    const list = (flag: string) => (typeof v[flag] === 'string' ? (v[flag] as string).split(',').map((k) => k.trim()).filter(Boolean) : undefined);
    const keywords = mtreeKeywords({ only: list('keywords'), add: list('add-keywords') });
    if (v['no-xattrs'] && keywords.includes('xattr')) throw new UsageError('--no-xattrs and the keyword xattr contradict each other', 'Give one of them.');
    const hash = !v['no-hash'];
    const { manifest } = await readWithProgress(path, (scope) => loadManifest(path, scope, { hash, target: v.target as string | undefined, mounted: Boolean(v.mounted) }));
    if (format === 'mtree') {
      process.stdout.write(toMtree(manifest, { hash, keywords }));
      return 0;
    }
    const text = serializeManifest(manifest);
    const problems = schemaCheck('manifest')(JSON.parse(text));
    if (problems.length) throw new Error(`internal error: the manifest does not match schema/manifest.schema.json: ${problems.join('; ')}`);
    process.stdout.write(text);
    return 0;
  },
};
