// Opening an image file given to part-image (verify, boot, manifest, diff):
// a raw ext4 image is read as it is; a qcow2 or vmdk is first checked for
// references to other files (image/foreign-refs.ts, then `qemu-img info` as
// a second opinion) and refused with exit 2 if it has one, before any tool
// opens it; only then is it converted to a raw copy in a private temporary
// folder, with options that cannot follow a backing file.
import type { Scope } from '../cleanup.js';
import { InputError, UnreadableImageError } from '../errors.js';
import type { ForeignReference } from '../types.js';
import { describeReferences, findForeignReferences } from './foreign-refs.js';
import { readExt4Superblock, superblockProblems } from './superblock.js';
import { readImageManifest } from './debugfs-reader.js';

export function foreignReferenceError(path: string, format: string, refs: readonly ForeignReference[]): InputError {
  return new InputError(
    `${path} refers to files outside itself: ${describeReferences(refs)}; part-image reads only self-contained images, and opened none of them`,
    `If the reference is the file you mean, make a self-contained copy (qemu-img convert -O ${format === 'vmdk' ? 'vmdk' : 'qcow2'} ${path} whole.${format}) and give that.`,
  );
}

/** A raw copy of a self-contained qcow2 or vmdk image, in a temporary folder of `scope`: every reader works on raw. */
export async function rawCopy(path: string, format: 'qcow2' | 'vmdk', scope: Scope): Promise<string> {
  const refs = await findForeignReferences(path, format);
  if (refs.length > 0) throw foreignReferenceError(path, format, refs);
  const { infoReferences, qemuImgInfo, qemuImgToRaw } = await import('../tools/qemu-img.js');
  const info = await qemuImgInfo(path, format);
  const more = infoReferences(info, path);
  if (more.length > 0) throw foreignReferenceError(path, format, more);
  if (info.encrypted) throw new InputError(`${path} is an encrypted ${format} image`, 'Decrypt it first, then verify the plain copy.');
  const dir = await scope.tempDir('part-image-raw-');
  const raw = `${dir}/image.raw`;
  await qemuImgToRaw(path, format, raw);
  const sb = await readExt4Superblock(raw);
  if (sb.notExt4) {
    throw new InputError(`${path} is a ${format} image, but what it holds is not an ext4 filesystem: ${sb.notExt4}`,
      'part-image reads single-filesystem ext4 images (raw, qcow2 or vmdk), with no partition table.');
  }
  return raw;
}

/** The raw ext4 image to read for `path`: itself, or a raw copy of a qcow2 or vmdk. */
export async function openImage(path: string, kind: 'image' | 'qcow2' | 'vmdk', scope: Scope): Promise<string> {
  return kind === 'image' ? path : rawCopy(path, kind, scope);
}

/**
 * Refuses (UnreadableImageError, exit 2) an image whose filesystem the kernel
 * would refuse or that debugfs cannot read, before anything mounts or boots
 * it: the superblock's own checks, then a full read of the tree without
 * hashes. `name` is the user's file, `raw` what is read.
 */
export async function refuseUnreadable(raw: string, name: string): Promise<void> {
  const sb = await readExt4Superblock(raw);
  if (!sb.superblock) throw new UnreadableImageError(name, sb.notExt4!);
  const problems = superblockProblems(sb.superblock, sb.fileSize);
  if (problems.length > 0) throw new UnreadableImageError(name, problems.map((p) => p.message).join('; '));
  const { e2fsck } = await import('../tools/e2fsck.js');
  const r = await e2fsck(raw);
  if (r.exitCode !== 0 || r.problems.length > 0) {
    const first = r.problems.length ? `: ${r.problems[0]}${r.problems.length > 1 ? ` (and ${r.problems.length - 1} more)` : ''}` : '';
    throw new UnreadableImageError(name, `e2fsck -fn does not pass it (exit ${r.exitCode}, ${r.meaning.join(', ')})${first}`);
  }
  await readImageManifest(raw, { hash: false, name });
}
