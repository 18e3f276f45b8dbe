// Names the owner of a block of an ext2/3/4 image: a superblock, a group
// descriptor table, a bitmap, an inode table slot, or the data/metadata of an
// inode, and that inode's paths. Used to explain why two builds differ.
//
// The group layout comes from `dumpe2fs` (tools/dumpe2fs.ts: every group,
// backups included); blocks outside the fixed metadata go to `debugfs icheck`
// (data, directory, extent-tree and xattr blocks), inodes to `debugfs ncheck`
// (tools/debugfs-icheck.ts).
import type { ImageLayout } from '../tools/dumpe2fs.js';

export type BlockRole =
  | { kind: 'superblock' | 'group-descriptors' | 'reserved-gdt' | 'block-bitmap' | 'inode-bitmap'; group: number }
  | { kind: 'inode-table'; group: number; firstInode: number; lastInode: number }
  | { kind: 'other' };

/** What the fixed layout says a block is; 'other' for data, directories, extent trees, xattr blocks, the journal. */
export function blockRole(layout: ImageLayout, block: number): BlockRole {
  const inside = (r: [number, number] | undefined) => r !== undefined && block >= r[0] && block <= r[1];
  // dumpe2fs names the primary superblock's block: 0 with 4 KiB blocks (it sits at byte 1024), 1 with 1 KiB blocks.
  for (const g of layout.groups) {
    if (g.superblock === block) return { kind: 'superblock', group: g.group };
    if (inside(g.gdt)) return { kind: 'group-descriptors', group: g.group };
    if (inside(g.reservedGdt)) return { kind: 'reserved-gdt', group: g.group };
    if (g.blockBitmap === block) return { kind: 'block-bitmap', group: g.group };
    if (g.inodeBitmap === block) return { kind: 'inode-bitmap', group: g.group };
    if (inside(g.inodeTable)) {
      const perBlock = layout.blockSize / layout.inodeSize;
      const firstInode = g.group * layout.inodesPerGroup + (block - g.inodeTable[0]) * perBlock + 1;
      return { kind: 'inode-table', group: g.group, firstInode, lastInode: firstInode + perBlock - 1 };
    }
  }
  return { kind: 'other' };
}

/** Names of the inodes ext4 reserves (1 to 10), for those that ncheck cannot name. */
export const RESERVED_INODES: Record<number, string> = {
  1: 'bad blocks inode',
  2: '/ (root directory)',
  5: 'boot loader inode',
  7: 'resize inode (reserved GDT blocks)',
  8: 'journal',
};
