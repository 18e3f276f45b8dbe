// mke2fs: formats an empty ext4 filesystem in an image file. part-image fills
// it afterwards with one debugfs script (see build/populate.ts).
import { run } from '../exec.js';

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

export function buildMke2fsArgs(image: string, sizeMb: number, o: Mke2fsOptions): string[] {
  const args = ['-q', '-F', '-t', 'ext4', '-b', String(BLOCK_SIZE), '-I', '256', '-m', '0', '-L', o.label];
  const ext = ['nodiscard'];
  if (o.seed) {
    args.push('-U', o.seed);
    ext.push(`hash_seed=${o.seed}`);
  }
  if (o.inodes) args.push('-N', String(o.inodes));
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
