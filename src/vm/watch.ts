// Host files a running VM writes (its serial ports), read as they grow.
import { open } from 'node:fs/promises';

/** Reads what was appended to a file since the last call; '' when nothing (or no file yet). */
export class FileTail {
  private offset = 0;
  text = '';

  constructor(readonly path: string) {}

  async poll(): Promise<string> {
    const fh = await open(this.path, 'r').catch(() => undefined);
    if (!fh) return '';
    try {
      const chunks: Buffer[] = [];
      const buf = Buffer.alloc(256 * 1024);
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.offset);
        if (bytesRead === 0) break;
        chunks.push(Buffer.from(buf.subarray(0, bytesRead)));
        this.offset += bytesRead;
      }
      const added = Buffer.concat(chunks).toString('utf8');
      this.text += added;
      return added;
    } finally {
      await fh.close();
    }
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Polls `check` every `everyMs` until it returns a value other than
 * undefined, or `timeoutMs` passes (then undefined).
 */
export async function pollUntil<T>(check: () => Promise<T | undefined>, timeoutMs: number, everyMs = 50): Promise<T | undefined> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() >= until) return undefined;
    await sleep(everyMs);
  }
}
