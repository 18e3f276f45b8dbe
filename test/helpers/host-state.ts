// What a run of part-image left on the host, looked for only under the paths
// of one test case (other developers' and CI jobs' runs share this machine):
// files in the case's private TMPDIR and beside its output, loop devices
// backed by its files, mounts under its folders, processes naming its paths.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';

export interface Leftovers {
  /** Entries of the private TMPDIR, with their size in bytes. */
  tmp: string[];
  /** Files beside the output other than the ones the verdict allows. */
  beside: string[];
  loops: string[];
  mounts: string[];
  processes: string[];
}

/** Bytes under `path` (files only; a folder counts what it holds). */
export async function treeBytes(path: string): Promise<number> {
  const st = await stat(path).catch(() => undefined);
  if (!st) return 0;
  if (!st.isDirectory()) return st.size;
  let n = 0;
  for (const name of await readdir(path).catch(() => [] as string[])) n += await treeBytes(join(path, name));
  return n;
}

async function describe(dir: string, allowed: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(dir).catch(() => [] as string[])).sort()) {
    if (allowed.includes(name)) continue;
    out.push(`${name} (${Math.round((await treeBytes(join(dir, name))) / 1024)} KiB)`);
  }
  return out;
}

/** Loop devices whose backing file lies under one of `roots`. */
export async function loopsUnder(roots: readonly string[]): Promise<string[]> {
  const r = await execa('losetup', ['-l', '-n', '-O', 'NAME,BACK-FILE'], { reject: false });
  return r.stdout.split('\n').map((l) => l.trim()).filter((l) => l && roots.some((root) => l.includes(root)));
}

/** Mount points under one of `roots` (from /proc/self/mountinfo, field 5). */
export async function mountsUnder(roots: readonly string[]): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m && roots.some((root) => m === root || m.startsWith(`${root}/`)));
}

/** Processes (other than this one) whose command line names one of `roots`. */
export async function processesNaming(roots: readonly string[]): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (roots.some((root) => cmd.includes(root))) found.push(`${pid}: ${cmd.replace(/\0/g, ' ').trim().slice(0, 200)}`);
  }
  return found;
}

/** Everything a run left under `tmp` (its TMPDIR) and `outDir`, except the files in `allowed`. */
export async function leftovers(tmp: string, outDir: string, allowed: readonly string[] = []): Promise<Leftovers> {
  const roots = [tmp, outDir];
  return {
    tmp: await describe(tmp, []),
    beside: await describe(outDir, allowed),
    loops: await loopsUnder(roots),
    mounts: await mountsUnder(roots),
    processes: await processesNaming(roots),
  };
}

export function isClean(l: Leftovers): boolean {
  return !l.tmp.length && !l.beside.length && !l.loops.length && !l.mounts.length && !l.processes.length;
}
