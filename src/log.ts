// Progress and logs go to stderr; results go to stdout. One logger, three levels.
//
// Live progress: a step (log.step: a stage, reading an input) shows, on a TTY,
// one line that is redrawn: a spinner, the step, its time, its phase
// (log.phase: "boot the VM (TCG)") and its counts (log.progress: "3.1 of 20
// MiB"). Without a TTY (CI logs) nothing is redrawn: a phase is a plain line
// when it starts, counts a plain line at most every 30 s, and each finished
// stage one line (log.stageDone). Colour only on a TTY, and never with NO_COLOR.
import type { StageResult } from './types.js';

export type Verbosity = 'quiet' | 'normal' | 'verbose';
export type StageMark = 'PASS' | 'FAIL' | 'SKIP' | 'ERROR';

const MARKS: Record<StageResult['status'], StageMark> = { passed: 'PASS', failed: 'FAIL', skipped: 'SKIP', error: 'ERROR' };

let verbosity: Verbosity = 'normal';
/** The running step's name, phase and counts, shown on its live line. */
let stepLabel = '';
let phaseText = '';
let progressText = '';
let lastPlainProgress = 0;
/** Steps running inside each other (a stage that builds the VM image): only the outer one draws a live line. */
let depth = 0;

const PLAIN_EVERY_MS = 30_000;

function live(): boolean {
  return Boolean(process.stderr.isTTY) && verbosity !== 'quiet';
}

function colour(): boolean {
  return Boolean(process.stderr.isTTY) && process.env.NO_COLOR === undefined && process.env.TERM !== 'dumb';
}

const COLOURS: Record<StageMark, string> = { PASS: '32', FAIL: '31', SKIP: '33', ERROR: '31;1' };

function secs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** Clears the live line (if one is drawn) before a plain line is written. */
let clearLive: () => void = () => {};

function line(text: string): void {
  clearLive();
  process.stderr.write(`${text}\n`);
}

export const log = {
  setVerbosity(v: Verbosity): void {
    verbosity = v;
  },
  get verbosity(): Verbosity {
    return verbosity;
  },
  info(message: string): void {
    if (verbosity !== 'quiet') line(message);
  },
  warn(message: string): void {
    line(`warning: ${message}`);
  },
  /** Every host command, as a line that can be pasted into a shell (verbose only). */
  command(line_: string): void {
    if (verbosity === 'verbose') line(`+ ${line_}`);
  },
  /**
   * What the running step is doing now, for steps with phases of their own
   * (the VM: "start qemu (TCG)", "boot", "attach", "collect results"). On a
   * TTY it joins the live line; elsewhere it is printed once as
   * "  STEP: PHASE". Counts given by log.progress are cleared by a new phase.
   */
  phase(text: string): void {
    phaseText = text;
    progressText = '';
    if (verbosity === 'quiet' || live()) return;
    line(`  ${stepLabel ? `${stepLabel}: ` : ''}${text}`);
  },
  /**
   * Counts of the running step ("hashing X: 3.1 of 1024.0 GiB", "4000
   * entries"): on a TTY they join the live line; elsewhere a plain line at
   * most every 30 s, so that a long read in CI shows it is alive.
   */
  progress(text: string): void {
    progressText = text;
    if (verbosity === 'quiet' || live()) return;
    const now = Date.now();
    if (lastPlainProgress === 0) lastPlainProgress = now;
    else if (now - lastPlainProgress >= PLAIN_EVERY_MS) {
      lastPlainProgress = now;
      line(`  ${stepLabel ? `${stepLabel}: ` : ''}${text}`);
    }
  },
  /**
   * One stage's verdict as soon as it is known ("PASS  fsck (30 ms)",
   * "FAIL  diff (31 ms)  2 findings", "SKIP  nspawn (0 ms)  --skip"), on
   * stderr: the summary with the details comes on stdout at the end.
   */
  stageDone(r: Pick<StageResult, 'name' | 'status' | 'durationMs' | 'findings' | 'reason'>): void {
    if (verbosity === 'quiet') return;
    const mark = MARKS[r.status];
    const m = colour() ? `\x1b[${COLOURS[mark]}m${mark.padEnd(5)}\x1b[0m` : mark.padEnd(5);
    const detail = r.status === 'failed' ? `${r.findings.length} finding${r.findings.length === 1 ? '' : 's'}`
      : r.status === 'skipped' || r.status === 'error' ? (r.reason ?? '').split('\n')[0] : '';
    line(`${m} ${r.name} (${secs(r.durationMs)})${detail ? `  ${detail}` : ''}`);
  },
  /** A step that takes a while: on a TTY it shows a live line (see the top), elsewhere nothing until it is done. */
  async step<T>(label: string, fn: () => Promise<T>): Promise<T> {
    if (depth > 0) {
      // Inside another step: this one is the outer step's phase.
      const outerPhase = phaseText;
      log.phase(label);
      try {
        return await fn();
      } finally {
        phaseText = outerPhase;
      }
    }
    depth++;
    const outer = { stepLabel, phaseText, progressText };
    stepLabel = label;
    phaseText = '';
    progressText = '';
    lastPlainProgress = 0;
    const start = Date.now();
    let timer: NodeJS.Timeout | undefined;
    let drawn = false;
    const previousClear = clearLive;
    if (live()) {
      const frames = ['|', '/', '-', '\\'];
      let i = 0;
      clearLive = () => {
        if (drawn) process.stderr.write('\r\x1b[K');
        drawn = false;
      };
      timer = setInterval(() => {
        const s = ((Date.now() - start) / 1000).toFixed(1);
        const parts = [phaseText, progressText].filter(Boolean).join(', ');
        const width = process.stderr.columns ?? 80;
        const text = `${frames[i++ % 4]} ${label} ${s}s${parts ? `  ${parts}` : ''}`;
        process.stderr.write(`\r${text.length >= width ? `${text.slice(0, width - 2)}…` : text}\x1b[K`);
        drawn = true;
      }, 200);
      timer.unref();
    }
    try {
      return await fn();
    } finally {
      depth--;
      if (timer) clearInterval(timer);
      clearLive();
      clearLive = previousClear;
      ({ stepLabel, phaseText, progressText } = outer);
      lastPlainProgress = 0;
      if (verbosity === 'verbose') line(`  ${label}: ${Date.now() - start} ms`);
    }
  },
};
