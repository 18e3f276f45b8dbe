// Names the owner of a block of an ext2/3/4 image: a superblock, a group
// descriptor table, a bitmap, an inode table slot, or the data/metadata of an
// inode, and that inode's paths. Used to explain why two builds differ.
//
// The group layout comes from `dumpe2fs` (every group, backups included);
// blocks outside the fixed metadata go to `debugfs icheck` (data, directory,
// extent-tree and xattr blocks), inodes to `debugfs ncheck`.
import { run } from '../exec.js';
import { runDebugfs } from '../tools/debugfs.js';

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
  const { stdout } = await run('dumpe2fs', [image], { hint: 'Is the file an ext4 image?' });
  return parseDumpe2fsGroups(stdout);
}

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

/** Parses `icheck B...`: "Block\tInode number" then "B\tINODE" or "B\t<block not found>". */
export function parseIcheck(text: string): Map<number, number | undefined> {
  const out = new Map<number, number | undefined>();
  for (const line of text.split('\n')) {
    const m = /^(\d+)\t(\d+|<block not found>)\s*$/.exec(line);
    if (m) out.set(Number(m[1]), m[2].startsWith('<') ? undefined : Number(m[2]));
  }
  return out;
}

/** Parses `ncheck I...`: "Inode\tPathname" then "I\tPATH" (debugfs prints "//name" for names in the root). */
export function parseNcheck(text: string): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const line of text.split('\n')) {
    const m = /^(\d+)\t(.*)$/.exec(line);
    if (!m) continue;
    const path = m[2].replace(/^\/\/+/, '/');
    const list = out.get(Number(m[1])) ?? [];
    list.push(path);
    out.set(Number(m[1]), list);
  }
  return out;
}

const BATCH = 500;

/** The inode owning each block (data, directory, extent-tree or xattr block), through batched `icheck`. */
export async function blockInodes(image: string, blocks: readonly number[]): Promise<Map<number, number | undefined>> {
  const cmds: string[] = [];
  for (let i = 0; i < blocks.length; i += BATCH) cmds.push(`icheck ${blocks.slice(i, i + BATCH).join(' ')}`);
  const out = new Map<number, number | undefined>();
  if (cmds.length === 0) return out;
  const res = await runDebugfs(image, cmds);
  for (const s of res.sections) for (const [b, ino] of parseIcheck(s.output)) out.set(b, ino);
  return out;
}

/** The paths of inodes, through batched `ncheck`; inodes without a name (journal, resize inode, unused) are absent. */
export async function inodePaths(image: string, inodes: readonly number[]): Promise<Map<number, string[]>> {
  const cmds: string[] = [];
  for (let i = 0; i < inodes.length; i += BATCH) cmds.push(`ncheck ${inodes.slice(i, i + BATCH).join(' ')}`);
  const out = new Map<number, string[]>();
  if (cmds.length === 0) return out;
  const res = await runDebugfs(image, cmds);
  for (const s of res.sections) for (const [ino, paths] of parseNcheck(s.output)) out.set(ino, [...(out.get(ino) ?? []), ...paths]);
  return out;
}

/** Names of the inodes ext4 reserves (1 to 10), for those that ncheck cannot name. */
export const RESERVED_INODES: Record<number, string> = {
  1: 'bad blocks inode',
  2: '/ (root directory)',
  5: 'boot loader inode',
  7: 'resize inode (reserved GDT blocks)',
  8: 'journal',
};
