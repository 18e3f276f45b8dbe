// dumpe2fs -h: the superblock numbers part-image needs (free space, sizes).
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
