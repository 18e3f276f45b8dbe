// Byte ranges of the ext4 on-disk superblock and inode fields that matter when
// two images differ: which named field a differing byte belongs to.
// Offsets from the kernel's fs/ext4/ext4.h (struct ext4_super_block, ext4_inode).

type Field = [name: string, offset: number, length: number];

export const SUPERBLOCK_FIELDS: readonly Field[] = [
  ['s_free_blocks_count', 0x0c, 4], ['s_free_inodes_count', 0x10, 4], ['s_mtime', 0x2c, 4], ['s_wtime', 0x30, 4],
  ['s_mnt_count', 0x34, 2], ['s_state', 0x3a, 2], ['s_lastcheck', 0x40, 4], ['s_uuid', 0x68, 16],
  ['s_volume_name', 0x78, 16], ['s_last_mounted', 0x88, 64], ['s_journal_uuid', 0xd0, 16], ['s_hash_seed', 0xec, 16],
  ['s_mkfs_time', 0x108, 4], ['s_free_blocks_count_hi', 0x158, 4], ['s_kbytes_written', 0x178, 8],
  ['s_first_error_time', 0x198, 4], ['s_last_error_time', 0x1cc, 4], ['s_checksum_seed', 0x270, 4],
  ['s_wtime_hi', 0x274, 1], ['s_mtime_hi', 0x275, 1], ['s_mkfs_time_hi', 0x276, 1], ['s_lastcheck_hi', 0x277, 1],
  ['s_jnl_blocks (journal inode backup)', 0x10c, 68], ['s_overhead_clusters', 0x248, 4], ['s_encrypt_pw_salt', 0x258, 16], ['s_checksum', 0x3fc, 4],
];

export const INODE_FIELDS: readonly Field[] = [
  ['i_mode', 0x00, 2], ['i_uid', 0x02, 2], ['i_size', 0x04, 4], ['i_atime', 0x08, 4], ['i_ctime', 0x0c, 4],
  ['i_mtime', 0x10, 4], ['i_dtime', 0x14, 4], ['i_gid', 0x18, 2], ['i_links_count', 0x1a, 2], ['i_blocks', 0x1c, 4],
  ['i_flags', 0x20, 4], ['i_version', 0x24, 4], ['i_block (extents or inline target)', 0x28, 60], ['i_generation', 0x64, 4],
  ['i_file_acl', 0x68, 4], ['i_size_high', 0x6c, 4], ['i_blocks_high', 0x74, 2], ['i_file_acl_high', 0x76, 2],
  ['i_uid_high', 0x78, 2], ['i_gid_high', 0x7a, 2], ['i_checksum_lo', 0x7c, 2], ['i_extra_isize', 0x80, 2],
  ['i_checksum_hi', 0x82, 2], ['i_ctime_extra', 0x84, 4], ['i_mtime_extra', 0x88, 4], ['i_atime_extra', 0x8c, 4],
  ['i_crtime', 0x90, 4], ['i_crtime_extra', 0x94, 4], ['i_version_hi', 0x98, 4], ['i_projid', 0x9c, 4],
];

/** Names of the fields whose bytes differ between `a` and `b` (same layout); bytes past the table are "in-inode xattrs" or "other". */
export function differingFields(a: Buffer, b: Buffer, fields: readonly Field[], tail: string): string[] {
  const names = new Set<string>();
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] === b[i]) continue;
    const f = fields.find(([, off, len]) => i >= off && i < off + len);
    names.add(f ? f[0] : tail);
  }
  return [...names];
}

/** The name of the field that holds byte `offset` of a superblock or an inode. */
export function fieldAt(fields: readonly Field[], offset: number, tail: string): string {
  return fields.find(([, off, len]) => offset >= off && offset < off + len)?.[0] ?? tail;
}
