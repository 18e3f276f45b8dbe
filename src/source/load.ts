// Any source to a manifest: an ext4 image (raw, qcow2, vmdk), a manifest
// file, or an input tree (directory, tar, layer stack). It sniffs the file
// and picks the reader, so it sits above every reader (image/, input/) and
// below the commands and the pipeline that name a source.
import { open, stat } from 'node:fs/promises';
import type { Manifest } from '../types.js';
import type { Scope } from '../cleanup.js';
import { InputError, PartImageError, UsageError } from '../errors.js';
import { readImageManifest } from '../image/debugfs-reader.js';
import { readMountedImage } from '../image/mount-reader.js';
import { openImage, refuseUnreadable } from '../image/open.js';
import { readExt4Superblock } from '../image/superblock.js';
import { readInput } from '../input/index.js';
import { looksLikeManifest, readManifestFile } from '../manifest/serialize.js';

export type SourceKind = 'image' | 'qcow2' | 'vmdk' | 'manifest' | 'other';

/** Sniffs a file: the ext2/3/4 superblock magic 0xEF53 at byte 1080, a qcow2 or vmdk header, or a manifest's first bytes. */
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

/**
 * Why a file that is not an image is not a tar archive either, or undefined
 * when it may be one (a valid tar header, or a compressed stream the tar
 * reader names): a tar archive starts with a 512-byte header whose checksum
 * (bytes 148-155) is the sum of its bytes, that field counted as spaces.
 */
export async function whyNotTar(path: string): Promise<string | undefined> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await fh.read(head, 0, 512, 0);
    if (bytesRead === 0) return 'the file is empty';
    const b = head.subarray(0, bytesRead);
    // gzip, xz, zstd, bzip2: the tar reader opens gzip and names the others.
    if (b[0] === 0x1f && b[1] === 0x8b) return undefined;
    if (b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) || b.readUInt32LE(0) === 0xfd2fb528 || b.subarray(0, 3).toString('latin1') === 'BZh') return undefined;
    if (bytesRead < 512) return `the file is only ${bytesRead} bytes, shorter than one 512-byte tar header`;
    if (b.every((x) => x === 0)) return 'its first 512 bytes are zeros, so there is no tar header, and an empty archive holds nothing to list';
    const stored = parseInt(b.subarray(148, 156).toString('latin1').replace(/\0.*$/s, '').trim(), 8);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : b[i];
    if (Number.isNaN(stored) || stored !== sum) return 'the 512 bytes at byte 0 are no tar header: their checksum does not match';
    return undefined;
  } finally {
    await fh.close();
  }
}

export async function loadManifest(path: string, scope: Scope, opts: { hash?: boolean; target?: string; mounted?: boolean } = {}): Promise<{ kind: string; manifest: Manifest }> {
  const kind = await sniffFile(path);
  try {
    if (kind === 'qcow2' || kind === 'vmdk' || kind === 'image') {
      const raw = await openImage(path, kind, scope);
      const hash = opts.hash ?? true;
      if (opts.mounted) {
        // The kernel parses what it mounts: nothing it would refuse, nothing e2fsck finds damaged.
        await refuseUnreadable(raw, path);
        return { kind, manifest: await readMountedImage(raw, scope, { hash }) };
      }
      return { kind, manifest: await readImageManifest(raw, { hash, name: path }) };
    }
    if (opts.mounted) throw new UsageError(`--mounted reads images only, and ${path} is not an ext4 image`, 'Leave --mounted out for trees, tars and manifests.');
    if (kind === 'manifest') return { kind, manifest: await readManifestFile(path) };
    if ((await stat(path).catch(() => undefined))?.isFile()) {
      const notTar = await whyNotTar(path);
      if (notTar !== undefined) {
        const notExt4 = (await readExt4Superblock(path)).notExt4 ?? 'no superblock';
        throw new InputError(`${path} is neither an ext4 image (${notExt4}) nor a tar archive (${notTar})`,
          'Give an ext4 image (raw, qcow2 or vmdk), a manifest file, a directory, a tar archive or a Raptor layer stack.');
      }
    }
    // Describing a tree is not building it: values ext4 cannot hold are shown, not refused.
    const tree = await readInput(path, scope, { hash: opts.hash, target: opts.target, limits: false });
    return { kind: tree.kind, manifest: tree.manifest };
  } catch (err) {
    // A system error reading the argument (EACCES, EIO) is about the input; any other
    // error that is not one of ours is a bug of part-image, and must not pass for bad input.
    if (err instanceof PartImageError || typeof (err as NodeJS.ErrnoException).code !== 'string') throw err;
    throw new InputError(`cannot read ${path}: ${(err as Error).message}`, 'Check the path and its permissions.', err);
  }
}
