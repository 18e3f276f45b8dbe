// mke2fs: formats an ext4 filesystem in an image file. Builds format it empty
// and fill it afterwards with one debugfs script (see build/populate.ts); the
// VM's job disk is filled from a folder at once (-d, vm/job.ts).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../exec.js';
import { UsageError } from '../errors.js';

export interface Mke2fsOptions {
  label: string;
  /** Filesystem UUID and htree hash seed; fixed for reproducible images. */
  seed?: string;
  /** mkfs time, in seconds since the epoch (E2FSPROGS_FAKE_TIME). */
  fakeTime?: number;
  /** Minimum number of inodes. */
  inodes?: number;
  /** A file holding MKE2FS_CONF. */
  configFile?: string;
  /** Fill the new filesystem from this host directory (mke2fs -d): files keep their holes. */
  fromDir?: string;
  /** No journal (a throw-away disk that is never fscked after a crash). */
  noJournal?: boolean;
}

export const BLOCK_SIZE = 4096;

/**
 * The mke2fs.conf every build uses (MKE2FS_CONFIG), instead of the host's:
 * the same features on every host, so images are reproducible across
 * machines and mount on older kernels (e2fsprogs 1.47.1+ turn on orphan_file
 * by default, which e2fsck before 1.47 refuses). These are Debian 12's ext4
 * defaults, without the small/floppy types that switch to 1 KiB blocks.
 */
export const MKE2FS_CONF = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
`;

/** Writes MKE2FS_CONF to `dir`/mke2fs.conf, for Mke2fsOptions.configFile; returns its path. */
export async function writeMke2fsConf(dir: string): Promise<string> {
  const file = join(dir, 'mke2fs.conf');
  await writeFile(file, MKE2FS_CONF);
  return file;
}

/** ext4 keeps at most 16 bytes of volume label (s_volume_name); mke2fs cuts a longer one silently. */
export const MAX_LABEL_BYTES = 16;

/** Throws a UsageError for a label ext4 cannot keep as given. */
export function checkLabel(label: string): void {
  const bytes = Buffer.byteLength(label);
  if (bytes > MAX_LABEL_BYTES) {
    throw new UsageError(`--label "${label}" is ${bytes} bytes; an ext4 label holds at most ${MAX_LABEL_BYTES} bytes`,
      `Shorten it, for example to "${Buffer.from(label).subarray(0, MAX_LABEL_BYTES).toString('utf8').replace(/\uFFFD+$/, '')}".`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(label)) {
    throw new UsageError(`--label ${JSON.stringify(label)} contains a control character`, 'Use printable characters only: the label shows up in /dev/disk/by-label and in blkid.');
  }
}

export function buildMke2fsArgs(image: string, sizeMb: number, o: Mke2fsOptions): string[] {
  const args = ['-q', '-F', '-t', 'ext4', '-b', String(BLOCK_SIZE), '-I', '256', '-m', '0', '-L', o.label];
  const ext = ['nodiscard'];
  if (o.seed) {
    args.push('-U', o.seed);
    ext.push(`hash_seed=${o.seed}`);
  }
  if (o.inodes) args.push('-N', String(o.inodes));
  if (o.noJournal) args.push('-O', '^has_journal');
  if (o.fromDir) args.push('-d', o.fromDir);
  args.push('-E', ext.join(','), image, `${sizeMb}M`);
  return args;
}

export function mke2fsEnv(o: Mke2fsOptions): Record<string, string> | undefined {
  const env: Record<string, string> = {};
  if (o.fakeTime !== undefined) env.E2FSPROGS_FAKE_TIME = String(o.fakeTime);
  if (o.configFile) env.MKE2FS_CONFIG = o.configFile;
  return Object.keys(env).length ? env : undefined;
}

export async function mke2fs(image: string, sizeMb: number, o: Mke2fsOptions): Promise<void> {
  await run('mke2fs', buildMke2fsArgs(image, sizeMb, o), { env: mke2fsEnv(o) });
}
