// sync from coreutils: `sync FILE` fsyncs one file, from a process of its
// own, so that a file another process is still writing goes to disk while
// that process works.
import { run } from '../exec.js';

/** Flushes `file` to disk (fsync); settles once what was written before the call is durable. */
export async function syncFile(file: string): Promise<void> {
  await run('sync', ['--', file]);
}
