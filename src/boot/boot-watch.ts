// Watches a boot's console as it arrives and decides when waiting longer is
// pointless, so that a boot that went wrong is named in seconds, not at the
// timeout:
// - systemd said it is in rescue or emergency mode (console-words.ts): the
//   boot ends FINAL_GRACE_MS later (the jobs probe may still print the failed
//   units with their journal in that time; when it does, it powers the
//   container off itself);
// - the boot stalled: no boot job changed for `stallMs`. The jobs probe prints
//   a progress line whenever the list of pending jobs changes, from the first
//   second on; a boot that is still getting somewhere is never cut short,
//   however slow, up to the hard limit (--boot-timeout). A probe that never
//   prints (no /bin/sh, no systemctl) counts from the start of the boot.
// The probe's end (or its emergency report) disarms the watch: the container
// powers itself off then.
import { ConsoleWords, type ConsoleWord } from './console-words.js';
import { PROBE_MARK } from './probe-files.js';

/** After a rescue/emergency line: time for the jobs probe to report the failed units. */
export const FINAL_GRACE_MS = 4_000;
/** The default --boot-stall: no job change for this long ends the boot as a hang. */
export const DEFAULT_BOOT_STALL_MS = 30_000;

export interface BootWatchResult {
  /** Why the watch ended the boot, if it did. */
  stoppedBy?: 'console' | 'stall';
  /** ms since the start when it stopped it. */
  stoppedAtMs?: number;
  /** ms between the last job change (or the start) and the stop. */
  stalledForMs?: number;
  /** systemd's own words seen on the console, in order. */
  words: ConsoleWord[];
  /** The word that explains a boot that did not finish, if any. */
  cause?: ConsoleWord;
}

export class BootWatch {
  private readonly words = new ConsoleWords();
  private readonly started: number;
  private lastProgress: number;
  private stop?: () => void;
  private timer?: NodeJS.Timeout;
  private finalAt?: number;
  private done = false;
  private partial = '';
  private result: Omit<BootWatchResult, 'words' | 'cause'> = {};

  constructor(
    private readonly stallMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.started = now();
    this.lastProgress = this.started;
  }

  /** The `watch` callback for exec's run(). */
  readonly watch = (chunk: string, stop: () => void): void => {
    this.stop = stop;
    if (!this.timer && !this.done) {
      this.timer = setInterval(() => this.tick(), 250);
      this.timer.unref();
    }
    for (const w of this.words.feed(chunk)) if (w.final && this.finalAt === undefined) this.finalAt = this.now();
    const text = this.partial + chunk;
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    for (const l of lines) {
      const at = l.indexOf(`${PROBE_MARK} `);
      if (at < 0) continue;
      const body = l.slice(at + PROBE_MARK.length + 1).replace(/\r$/, '');
      if (body.startsWith('progress') || body.startsWith('jobs-begin')) this.lastProgress = this.now();
      // The probe reports and powers off by itself from here.
      if (body === 'end' || body === 'emergency') this.disarm();
    }
    this.tick();
  };

  /** Checks the clocks; exported for tests with a fake clock. */
  tick(): void {
    if (this.done || !this.stop) return;
    const t = this.now();
    if (this.finalAt !== undefined && t - this.finalAt >= FINAL_GRACE_MS) this.end('console', t);
    else if (t - this.lastProgress >= this.stallMs) this.end('stall', t);
  }

  private end(by: 'console' | 'stall', t: number): void {
    this.result = { stoppedBy: by, stoppedAtMs: t - this.started, stalledForMs: t - this.lastProgress };
    this.disarm();
    this.stop?.();
  }

  private disarm(): void {
    this.done = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** What it saw and did; call after the run ended (it also stops the clock). */
  finish(): BootWatchResult {
    this.disarm();
    return { ...this.result, words: [...this.words.seen], cause: this.words.cause() };
  }
}
