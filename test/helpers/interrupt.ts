// Runs the CLI as a child process and sends it signals at a known point of
// its work: when a line of its --verbose stderr (a host command, a stage's
// end) or a file in one of its folders appears, then after an optional delay.
// The point is observed, not guessed from timings of another run.
import { readdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';
import { CLI } from './cli.js';

export type Marker =
  | { stderr: RegExp }
  | { file: RegExp; in: string }
  | { started: true };

export interface InterruptPlan {
  marker: Marker;
  /** ms after the marker. */
  delayMs?: number;
  /** Signals sent in turn, `gapMs` apart. */
  signals: NodeJS.Signals[];
  gapMs?: number;
}

export interface InterruptOutcome {
  /** The pid of the part-image run. */
  pid: number;
  exitCode?: number;
  signal?: string;
  stderr: string;
  stdout: string;
  /** False when the run ended before the marker appeared (nothing was sent). */
  sent: boolean;
  /** The marker appeared: seen while the run went on, or (a stderr marker) in its whole stderr afterwards. */
  markerSeen: boolean;
  /** The run had already ended when the first signal was due. */
  finishedFirst: boolean;
  /** ms from spawn to the first signal. */
  atMs: number;
}

async function markerSeen(m: Marker, stderr: string): Promise<boolean> {
  if ('started' in m) return true;
  if ('stderr' in m) return m.stderr.test(stderr);
  return (await readdir(m.in).catch(() => [] as string[])).some((n) => m.file.test(n));
}

export async function runAndInterrupt(args: string[], env: Record<string, string>, plan: InterruptPlan): Promise<InterruptOutcome> {
  const t0 = Date.now();
  const child: ResultPromise = execa('node', [CLI, ...args], { reject: false, env: { ...process.env, ...env }, buffer: true, all: false });
  let stderr = '';
  let ended = false;
  child.stderr?.on('data', (b: Buffer) => {
    stderr += b.toString('utf8');
  });
  void child.finally(() => {
    ended = true;
  });
  let seen = false;
  while (!ended && !(seen = await markerSeen(plan.marker, stderr))) await sleep(10);
  let sent = false;
  let finishedFirst = ended;
  let atMs = 0;
  if (!ended) {
    if (plan.delayMs) await sleep(plan.delayMs);
    finishedFirst = ended;
    atMs = Date.now() - t0;
    for (const [i, s] of plan.signals.entries()) {
      if (ended) break;
      if (i > 0) await sleep(plan.gapMs ?? 200);
      child.kill(s);
      sent = true;
    }
  }
  const r = await child;
  if (!seen && 'stderr' in plan.marker) seen = plan.marker.stderr.test(stderr);
  // A signal sent in the last moment of a run reaches a process already in
  // process.exit(), which runs no handler: it exits 0 without the "cleaning
  // up" line (a signal it did handle prints that line first, and without a
  // handler the signal would kill it). The run finished first.
  if (sent && !finishedFirst && r.exitCode === 0 && !stderr.includes('cleaning up')) finishedFirst = true;
  return {
    pid: child.pid ?? -1,
    exitCode: r.exitCode ?? undefined,
    signal: r.signal ?? undefined,
    stderr,
    stdout: String(r.stdout ?? ''),
    sent,
    markerSeen: seen,
    finishedFirst,
    atMs,
  };
}
