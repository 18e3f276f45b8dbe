// A debugfs script fed to debugfs's stdin as it is made (tools/debugfs.ts,
// DebugfsFeed), run by the real debugfs on real images: every command runs,
// in order; the maker waits when debugfs lags; a debugfs that cannot open
// the image is an error that names it, and a maker still adding is not left
// waiting.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DebugfsFeed, runDebugfs, runDebugfsFeed } from '../src/tools/debugfs.js';
import { ToolError } from '../src/errors.js';

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-feed-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function emptyImage(name: string, inodes: number, mb: number): Promise<string> {
  const img = join(work, name);
  await execa('mke2fs', ['-q', '-F', '-t', 'ext4', '-N', String(inodes), '-E', 'nodiscard', img, `${mb}M`]);
  return img;
}

describe('DebugfsFeed', () => {
  it('runs every command of a script much bigger than what it keeps ahead, in order, while it is made', async () => {
    const img = await emptyImage('many.img', 4096, 64);
    const feed = new DebugfsFeed();
    const running = runDebugfsFeed(img, feed, { write: true });
    let waits = 0;
    // 200,000 commands, about 6.5 MB, more than the 4 MB kept ahead; every
    // 1,000th makes a folder, whose names say that all ran, in order.
    for (let i = 0; i < 200_000; i++) {
      feed.add(i % 1000 === 999 ? `mkdir d${String(i).padStart(6, '0')}` : 'set_current_time 20200101000000');
      const room = feed.room();
      if (room) {
        waits++;
        await room;
      }
    }
    feed.end();
    const res = await running;
    expect(res.stderr).toBe('');
    expect(feed.count).toBe(200_000);
    expect(waits).toBeGreaterThan(0);
    const ls = await runDebugfs(img, ['ls -p /'], { mergeStderr: true });
    const names = ls.sections[0].output.split('\n').map((l) => l.split('/')[5]).filter((n) => n?.startsWith('d'));
    expect(names).toHaveLength(200);
    expect(names[0]).toBe('d000999');
    expect(names.at(-1)).toBe('d199999');
  });

  it('a file that is not a filesystem: the run fails naming it, and a maker that goes on adding is not left waiting', async () => {
    const bad = join(work, 'not-ext4.img');
    await writeFile(bad, Buffer.alloc(1024 * 1024, 0x5a));
    const feed = new DebugfsFeed();
    const running = runDebugfsFeed(bad, feed, { write: true });
    const failed = running.then(() => undefined, (e: unknown) => e);
    // Far more than a pipe holds: debugfs has exited long before the end.
    for (let i = 0; i < 200_000; i++) {
      feed.add(`mkdir d${i}`);
      const room = feed.room();
      if (room) await room;
    }
    feed.end();
    const err = await failed;
    expect(err).toBeInstanceOf(ToolError);
    expect((err as ToolError).message).toMatch(/not-ext4\.img/);
    expect(String((err as ToolError).hint)).toMatch(/cannot open .*not-ext4\.img/);
  });

  it('refuses a command debugfs would misread, before it is fed', () => {
    const feed = new DebugfsFeed();
    expect(() => feed.add('mkdir a\nrm b')).toThrow(/newline/);
    expect(() => feed.add('# comment')).toThrow(/comment/);
    expect(feed.count).toBe(0);
    feed.drop();
  });
});
