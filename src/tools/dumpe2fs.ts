// dumpe2fs -h: the superblock numbers part-image needs (free space, sizes).
import { run } from '../exec.js';

export interface SuperblockInfo {
  blockSize: number;
  blockCount: number;
  freeBlocks: number;
  reservedBlocks: number;
  inodeCount: number;
  freeInodes: number;
  label: string;
  uuid: string;
  features: string[];
}

export function parseDumpe2fsHeader(text: string): SuperblockInfo {
  const field = (name: string): string => {
    const m = new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(text);
    if (!m) throw new Error(`dumpe2fs output has no "${name}" line`);
    return m[1].trim();
  };
  const num = (name: string) => Number(field(name));
  return {
    blockSize: num('Block size'),
    blockCount: num('Block count'),
    freeBlocks: num('Free blocks'),
    reservedBlocks: num('Reserved block count'),
    inodeCount: num('Inode count'),
    freeInodes: num('Free inodes'),
    label: field('Filesystem volume name').replace(/^<none>$/, ''),
    uuid: field('Filesystem UUID'),
    features: field('Filesystem features').split(/\s+/),
  };
}

export async function readSuperblock(image: string): Promise<SuperblockInfo> {
  const { stdout } = await run('dumpe2fs', ['-h', image], { hint: 'Is the file an ext4 image?' });
  return parseDumpe2fsHeader(stdout);
}
