// debugfs icheck and ncheck: which inode owns a block, which paths name an
// inode, asked in batches of one debugfs process. Tested on captured real
// output (test/reproducible.test.ts).
import { runDebugfs } from './debugfs.js';

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
