// Any source to a manifest: an ext4 image, a manifest file, or an input tree.
import { open } from 'node:fs/promises';
import type { Manifest } from '../types.js';
import type { Scope } from '../cleanup.js';
import { InputError, PartImageError, UsageError } from '../errors.js';
import { readImageManifest } from '../image/debugfs-reader.js';
import { readMountedImage } from '../image/mount-reader.js';
import { readInput } from '../input/index.js';
import { looksLikeManifest, readManifestFile } from './serialize.js';

export type SourceKind = 'image' | 'qcow2' | 'vmdk' | 'manifest' | 'other';

/** Sniffs a file: the ext2/3/4 superblock magic 0xEF53 at byte 1080, or a manifest's first bytes. */
export async function sniffFile(path: string): Promise<SourceKind> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return 'other';
  }
  try {
    const buf = Buffer.alloc(1082);
    // A directory opens fine on Linux and fails only on read (EISDIR): it is not a file to sniff.
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0).catch(() => ({ bytesRead: 0 }));
    if (bytesRead >= 1082 && buf.readUInt16LE(1080) === 0xef53) return 'image';
    if (buf.subarray(0, 4).equals(Buffer.from('QFI\xfb', 'latin1'))) return 'qcow2';
    if (buf.subarray(0, 4).toString('latin1') === 'KDMV' || buf.subarray(0, 21).toString('latin1') === '# Disk DescriptorFile') return 'vmdk';
    if (looksLikeManifest(buf.subarray(0, bytesRead).toString('utf8'))) return 'manifest';
    return 'other';
  } finally {
    await fh.close();
  }
}

export async function loadManifest(path: string, scope: Scope, opts: { hash?: boolean; target?: string; mounted?: boolean } = {}): Promise<{ kind: string; manifest: Manifest }> {
  const kind = await sniffFile(path);
  try {
    if (kind === 'qcow2' || kind === 'vmdk' || kind === 'image') {
      const raw = kind === 'image' ? path : await rawCopy(path, kind, scope);
      const hash = opts.hash ?? true;
      if (opts.mounted) return { kind, manifest: await readMountedImage(raw, scope, { hash }) };
      return { kind, manifest: await readImageManifest(raw, { hash }) };
    }
    if (opts.mounted) throw new UsageError(`--mounted reads images only, and ${path} is not an ext4 image`, 'Leave --mounted out for trees, tars and manifests.');
    if (kind === 'manifest') return { kind, manifest: await readManifestFile(path) };
    const tree = await readInput(path, scope, { hash: opts.hash, target: opts.target });
    return { kind: tree.kind, manifest: tree.manifest };
  } catch (err) {
    // Our own errors already say what to do (a missing tool is exit 3, not bad input).
    if (err instanceof PartImageError) throw err;
    const hint = kind === 'other'
      ? 'Give an ext4 image, a manifest file, a directory, a tar archive or a Raptor layer stack.'
      : `The ${kind} looks damaged: check it with \`e2fsck -fn\` (or \`part-image verify\`).`;
    throw new InputError(`cannot read ${path}: ${(err as Error).message}`, hint, err);
  }
}

/** A raw copy of a qcow2 or vmdk image in a temporary folder: every reader works on raw. */
export async function rawCopy(path: string, format: 'qcow2' | 'vmdk', scope: Scope): Promise<string> {
  const { qemuImgToRaw } = await import('../tools/qemu-img.js');
  const dir = await scope.tempDir('part-image-raw-');
  const raw = `${dir}/image.raw`;
  await qemuImgToRaw(path, format, raw);
  return raw;
}
