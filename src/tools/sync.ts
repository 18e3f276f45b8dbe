// sync from coreutils: `sync FILE` fsyncs one file, from a process of its
// own, so that a file another process is still writing goes to disk while
// that process works.
import { run } from '../exec.js';

/**
 * Flushes `file` to disk (fsync); settles once what was written before the
 * call is durable. `logged: false` leaves it out of --verbose, for the
 * repeats of a sync that runs again and again.
 */
export async function syncFile(file: string, logged = true): Promise<void> {
  await run('sync', ['--', file], { logged });
}
