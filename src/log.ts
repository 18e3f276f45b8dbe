// Progress and logs go to stderr; results go to stdout. One logger, three levels.
export type Verbosity = 'quiet' | 'normal' | 'verbose';

let verbosity: Verbosity = 'normal';

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
        process.stderr.write(`\r${frames[i++ % 4]} ${label} ${s}s`);
      }, 200);
    }
    try {
      return await fn();
    } finally {
      if (timer) {
        clearInterval(timer);
        process.stderr.write('\r\x1b[K');
      }
      if (verbosity === 'verbose') process.stderr.write(`  ${label}: ${Date.now() - start} ms\n`);
    }
  },
};
