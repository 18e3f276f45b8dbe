// Hashing the files of a walked tree (sha256, 8 at a time, checked against
// the size lstat gave), and the one way a failed fs call on the input is
// named (inputIoError). Used by walk/dir.ts and input/layers.ts.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ContentMap, ManifestEntry } from '../types.js';
import { InputError, InterruptedError } from '../errors.js';
import { READ_HINT } from '../tools/getfattr.js';
import { isShuttingDown } from '../cleanup.js';
import { log } from '../log.js';

/** A failed fs call turned into an InputError naming the path and what to do. */
export function inputIoError(err: unknown, path: string, host: string, action: string): InputError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const where = path === host ? path : `${path} (${host})`;
  if (code === 'EACCES' || code === 'EPERM') {
    return new InputError(`cannot ${action} ${where}: permission denied`, READ_HINT, err);
  }
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new InputError(`${where} vanished while part-image was reading it`, 'Do not change the input while part-image reads it.', err);
  }
  return new InputError(`cannot ${action} ${where}: ${(err as Error)?.message ?? String(err)}`, undefined, err);
}

/** A small counting semaphore: at most `n` calls of `fn` run at once, in call order. */
export function limiter(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let active = 0;
  // A queue with a moving head: Array.shift() is O(n) on long queues.
  let waiting: (() => void)[] = [];
  let head = 0;
  const next = (): void => {
    if (head < waiting.length) {
      const wake = waiting[head++];
      if (head > 1024 && head * 2 > waiting.length) {
        waiting = waiting.slice(head);
        head = 0;
      }
      wake();
    }
  };
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (active >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    else active++;
    try {
      return await fn();
    } finally {
      if (head < waiting.length) next(); // hand the slot over
      else active--;
    }
  };
}

/** sha256 of a file's bytes (holes of sparse files read as zeros), checked against the size lstat gave. */
async function sha256File(path: string, host: string, size: number): Promise<string> {
  const hash = createHash('sha256');
  let n = 0;
  try {
    if (size <= 4 * 1024 * 1024) {
      const buf = await readFile(host);
      hash.update(buf);
      n = buf.length;
    } else {
      for await (const chunk of createReadStream(host, { highWaterMark: 1024 * 1024 })) {
        hash.update(chunk as Buffer);
        n += (chunk as Buffer).length;
      }
    }
  } catch (err) {
    throw inputIoError(err, path, host, 'read');
  }
  if (n !== size) {
    throw new InputError(
      `${path} (${host}) changed while part-image was reading it (${size} bytes at lstat, ${n} read)`,
      'Do not change the input while part-image reads it.',
    );
  }
  return hash.digest('hex');
}

/** Fill sha256 of every file entry from the host file `content` maps it to, `concurrency` at a time. */
export async function hashFiles(entries: ManifestEntry[], content: ContentMap, concurrency = 8): Promise<void> {
  const limit = limiter(concurrency);
  const total = entries.reduce((n, e) => n + (e.type === 'file' ? e.size ?? 0 : 0), 0);
  let done = 0;
  await Promise.all(
    entries
      .filter((e) => e.type === 'file')
      .map((e) =>
        limit(async () => {
          const host = content.get(e.path);
          if (host === undefined) throw new Error(`no content for ${e.path}`);
          if (isShuttingDown()) throw new InterruptedError('signal');
          e.sha256 = await sha256File(e.path, host, e.size ?? 0);
          done += e.size ?? 0;
          log.progress(`hashed ${(done / 2 ** 20).toFixed(0)} of ${(total / 2 ** 20).toFixed(0)} MiB`);
        }),
      ),
  );
}
