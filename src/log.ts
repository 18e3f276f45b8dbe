// Progress and logs go to stderr; results go to stdout. One logger, three levels.
export type Verbosity = 'quiet' | 'normal' | 'verbose';

let verbosity: Verbosity = 'normal';
/** What the running step is doing right now (log.progress), shown with its live line. */
let progressText = '';
let lastPlainProgress = 0;

export const log = {
  setVerbosity(v: Verbosity): void {
    verbosity = v;
  },
  get verbosity(): Verbosity {
    return verbosity;
  },
  info(message: string): void {
    if (verbosity !== 'quiet') process.stderr.write(`${message}\n`);
  },
  warn(message: string): void {
    process.stderr.write(`warning: ${message}\n`);
  },
  /** Every host command, as a line that can be pasted into a shell (verbose only). */
  command(line: string): void {
    if (verbosity === 'verbose') process.stderr.write(`+ ${line}\n`);
  },
  /**
   * Progress of the running step ("hashing X: 3.1 of 1024.0 GiB"): on a TTY
   * it joins the step's live line; elsewhere it is printed as a plain line at
   * most every 30 s, so that a long read in CI shows it is alive.
   */
  progress(text: string): void {
    progressText = text;
    if (verbosity === 'quiet' || process.stderr.isTTY) return;
    const now = Date.now();
    if (lastPlainProgress === 0) lastPlainProgress = now;
    else if (now - lastPlainProgress >= 30_000) {
      lastPlainProgress = now;
      process.stderr.write(`  ${text}\n`);
    }
  },
  /** A step that takes a while: on a TTY it shows a live line, elsewhere one line when done. */
  async step<T>(label: string, fn: () => Promise<T>): Promise<T> {
    const tty = process.stderr.isTTY && verbosity !== 'quiet';
    const start = Date.now();
    let timer: NodeJS.Timeout | undefined;
    if (tty) {
      const frames = ['|', '/', '-', '\\'];
      let i = 0;
      timer = setInterval(() => {
        const s = ((Date.now() - start) / 1000).toFixed(1);
        process.stderr.write(`\r${frames[i++ % 4]} ${label} ${s}s${progressText ? `  ${progressText}` : ''}\x1b[K`);
      }, 200);
    }
    try {
      return await fn();
    } finally {
      progressText = '';
      lastPlainProgress = 0;
      if (timer) {
        clearInterval(timer);
        process.stderr.write('\r\x1b[K');
      }
      if (verbosity === 'verbose') process.stderr.write(`  ${label}: ${Date.now() - start} ms\n`);
    }
  },
};
