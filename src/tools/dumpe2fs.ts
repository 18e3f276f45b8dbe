// dumpe2fs: the superblock numbers part-image needs (-h: free space, sizes),
// and the full listing's group layout (which block is which group's
// superblock, descriptors, bitmaps, inode table; image/block-owner.ts).
import { run } from '../exec.js';
import { ToolError, UnreadableImageError } from '../errors.js';

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

/** dumpe2fs -h; a superblock it cannot read (damaged, unsupported features) is an UnreadableImageError. */
export async function readSuperblock(image: string, name = image): Promise<SuperblockInfo> {
  let stdout: string;
  try {
    ({ stdout } = await run('dumpe2fs', ['-h', image], { env: { LC_ALL: 'C' } }));
  } catch (err) {
    if (!(err instanceof ToolError)) throw err;
    const why = err.stderr.split('\n').map((l) => l.trim()).filter((l) => l && !/^dumpe2fs \d/.test(l)).pop();
    throw new UnreadableImageError(name, `dumpe2fs cannot read its superblock: ${why?.replace(/^dumpe2fs: /, '') ?? `exit ${err.toolExitCode ?? 'on a signal'}`}`, err);
  }
  return parseDumpe2fsHeader(stdout);
}

// ---------------------------------------------------------------------------
// The group layout (dumpe2fs IMAGE, the full listing)

export interface GroupLayout {
  group: number;
  first: number;
  last: number;
  /** Primary or backup superblock. */
  superblock?: number;
  gdt?: [number, number];
  reservedGdt?: [number, number];
  blockBitmap: number;
  inodeBitmap: number;
  inodeTable: [number, number];
}

export interface ImageLayout {
  blockSize: number;
  inodeSize: number;
  inodesPerGroup: number;
  journalInode?: number;
  groups: GroupLayout[];
}

const range = (s: string): [number, number] => {
  const [a, b] = s.split('-').map(Number);
  return [a, b ?? a];
};

/** The full listing: every group, backups included. */
export function buildLayoutArgs(image: string): string[] {
  return [image];
}

/** Parses `dumpe2fs IMAGE` (the full listing, not -h). */
export function parseDumpe2fsGroups(text: string): ImageLayout {
  const num = (name: string): number | undefined => {
    const m = new RegExp(`^${name}:\\s*(\\d+)`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  };
  const blockSize = num('Block size');
  const inodeSize = num('Inode size');
  const inodesPerGroup = num('Inodes per group');
  if (!blockSize || !inodeSize || !inodesPerGroup) throw new Error('dumpe2fs output lacks Block size / Inode size / Inodes per group');
  const groups: GroupLayout[] = [];
  for (const chunk of text.split(/^(?=Group \d+: )/m).slice(1)) {
    const head = /^Group (\d+): \(Blocks (\d+)-(\d+)\)/.exec(chunk);
    if (!head) continue;
    const sb = /(?:Primary|Backup) superblock at (\d+)/.exec(chunk);
    const gdt = /Group descriptors at (\d+-\d+|\d+)/.exec(chunk);
    const rgdt = /Reserved GDT blocks at (\d+-\d+|\d+)/.exec(chunk);
    const bb = /Block bitmap at (\d+)/.exec(chunk);
    const ib = /Inode bitmap at (\d+)/.exec(chunk);
    const it = /Inode table at (\d+-\d+|\d+)/.exec(chunk);
    if (!bb || !ib || !it) throw new Error(`dumpe2fs output: group ${head[1]} lacks its bitmaps or inode table`);
    groups.push({
      group: Number(head[1]), first: Number(head[2]), last: Number(head[3]),
      superblock: sb ? Number(sb[1]) : undefined,
      gdt: gdt ? range(gdt[1]) : undefined,
      reservedGdt: rgdt ? range(rgdt[1]) : undefined,
      blockBitmap: Number(bb[1]), inodeBitmap: Number(ib[1]), inodeTable: range(it[1]),
    });
  }
  return { blockSize, inodeSize, inodesPerGroup, journalInode: num('Journal inode'), groups };
}

export async function readImageLayout(image: string): Promise<ImageLayout> {
  const { stdout } = await run('dumpe2fs', buildLayoutArgs(image), { hint: 'Is the file an ext4 image?' });
  return parseDumpe2fsGroups(stdout);
}
