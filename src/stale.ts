// Who owns a temporary file, and the removal of those whose owner was killed
// (SIGKILL, a crash, a power cut: no cleanup could run).
//
// Every temporary name carries its owner: the pid, the pid's start time
// (/proc/PID/stat field 22, clock ticks since boot: a reused pid has another
// one) and a tag of the boot id and PID namespace (a pid means nothing after a
// reboot or in another container sharing the folder):
//   $TMPDIR/part-image-debugfs-PID-START-TAG-XXXXXX   (Scope.tempDir)
//   .NAME.part-image-PID-START-TAG.tmp[.qcow2|.vmdk]  (beside the output)
// A leftover is removed only when its tag is ours and no process with that pid
// and start time exists: never a file of a live run, never one we cannot judge.
// The VM build lock (vm/image.ts) judges its owner with the same functions.
import { createHash } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { readdir, readFile, rm, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { log } from './log.js';

function readTextSync(p: string): string {
  try {
    return readFileSync(p, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Field 22 of /proc/PID/stat text: the start time in clock ticks since boot. */
function startTimeOf(stat: string): string {
  // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
  if (!stat) return '';
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
}

/** Start time of a process in clock ticks since boot, or '' when it does not exist (or /proc is not there). */
export async function processStartTime(pid: number): Promise<string> {
  return startTimeOf(await readFile(`/proc/${pid}/stat`, 'utf8').then((t) => t.trim(), () => ''));
}

/** True while a process with this pid exists (EPERM: it exists, owned by another user). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export const BOOT_ID = readTextSync('/proc/sys/kernel/random/boot_id');
export const PID_NS = (() => {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return '';
  }
})();
const START_TIME = startTimeOf(readTextSync(`/proc/${process.pid}/stat`)) || '0';
/** Six hex digits of the boot id and PID namespace: names from another boot or container differ. */
const NS_TAG = createHash('sha256').update(`${BOOT_ID}\n${PID_NS}`).digest('hex').slice(0, 6);

/** This process as it appears in temporary names: PID-START-TAG. */
export const RUN_TAG = `${process.pid}-${START_TIME}-${NS_TAG}`;

const TAG = String.raw`(\d+)-(\d+)-([0-9a-f]{6})`;
/** Scope.tempDir(): [.]part-image-[WORD-]...PID-START-TAG-XXXXXX (mkdtemp's six characters). */
const TEMP_DIR = new RegExp(String.raw`^\.?part-image-(?:[A-Za-z0-9_]+-)*${TAG}-[A-Za-z0-9]{6}$`);
/** The image being built beside the output, and its conversions. */
const BESIDE_OUTPUT = new RegExp(String.raw`^\..+\.part-image-${TAG}\.tmp(?:\.[a-z0-9]+)?$`);
/** The same, as part-image named it before the start time and tag were added: judged by the pid alone. */
const BESIDE_OUTPUT_PID_ONLY = /^\..+\.part-image-(\d+)\.tmp(?:\.[a-z0-9]+)?$/;

/** The temporary name of the image built for `outputBase`, beside it. */
export function besideOutputName(outputBase: string): string {
  return `.${outputBase}.part-image-${RUN_TAG}.tmp`;
}

interface Owner {
  pid: number;
  startTime?: string;
  tag?: string;
}

export function ownerOfName(name: string): Owner | undefined {
  const m = TEMP_DIR.exec(name) ?? BESIDE_OUTPUT.exec(name);
  if (m) return { pid: Number(m[1]), startTime: m[2], tag: m[3] };
  const legacy = BESIDE_OUTPUT_PID_ONLY.exec(name);
  return legacy ? { pid: Number(legacy[1]) } : undefined;
}

/** True when the owner is known to be gone; false while it lives or cannot be judged from here. */
export async function ownerGone(o: Owner): Promise<boolean> {
  if (o.tag !== undefined && o.tag !== NS_TAG) return false;
  if (o.pid === process.pid && (o.startTime === undefined || o.startTime === START_TIME)) return false;
  if (!pidAlive(o.pid)) return true;
  if (o.startTime === undefined) return false;
  const started = await processStartTime(o.pid);
  return started !== '' && started !== o.startTime;
}

async function bytesUnder(path: string): Promise<number> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return 0;
  if (!st.isDirectory()) return st.blocks * 512;
  let n = st.blocks * 512;
  for (const name of await readdir(path).catch(() => [] as string[])) n += await bytesUnder(join(path, name));
  return n;
}

/** Mount points at or under `path` (a killed run's loop mount): removing under them would reach into the mounted image. */
async function mountsUnder(path: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return info.split('\n').map((l) => unescape(l.split(' ')[4] ?? '')).filter((m) => m === path || m.startsWith(`${path}/`));
}

export interface SweepResult {
  removed: string[];
  pids: number[];
  bytes: number;
  /** Stale, but still mounted: left for the user, with the reason. */
  kept: string[];
}

const swept = new Set<string>();

/**
 * Removes what killed part-image runs left in `dirs` (each folder at most once
 * per process), and says so in one line on stderr.
 */
export async function sweepStale(dirs: readonly string[]): Promise<SweepResult> {
  const result: SweepResult = { removed: [], pids: [], bytes: 0, kept: [] };
  for (const dir of dirs) {
    if (swept.has(dir)) continue;
    swept.add(dir);
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const owner = ownerOfName(name);
      if (!owner || !(await ownerGone(owner))) continue;
      const path = join(dir, name);
      const mounted = await mountsUnder(path);
      if (mounted.length) {
        result.kept.push(`${path} (still mounted: ${mounted.join(', ')}; umount it, then remove it)`);
        continue;
      }
      const bytes = await bytesUnder(path);
      try {
        await rm(path, { recursive: true, force: true, maxRetries: 3, retryDelay: 100 });
      } catch (err) {
        result.kept.push(`${path} (${(err as Error).message})`);
        continue;
      }
      result.removed.push(path);
      result.bytes += bytes;
      if (!result.pids.includes(owner.pid)) result.pids.push(owner.pid);
    }
  }
  if (result.removed.length) {
    const n = result.removed.length;
    const mib = result.bytes / 1048576;
    log.info(`part-image: removed ${n} leftover${n === 1 ? '' : 's'} of killed runs (pid ${result.pids.join(', ')}): ${mib < 10 ? mib.toFixed(1) : Math.round(mib)} MiB`);
  }
  for (const k of result.kept) log.warn(`a leftover of a killed run was not removed: ${k}`);
  return result;
}
