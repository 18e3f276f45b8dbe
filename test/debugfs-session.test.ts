// debugfs kept open for many batches (tools/debugfs.ts DebugfsSession) and
// the reader's pool of them (image/debugfs-walk.ts DebugfsPool), on the real
// debugfs and real images: each batch's answer is byte for byte what a run
// of the same commands prints, however big, even when the image's names and
// symlink targets look like debugfs's own lines; a file that is not a
// filesystem fails at open, a missing tool at once; a debugfs that dies
// fails what it still owed;
// a pool retires a session whose output grew big and goes on in a new one.
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DebugfsSession, runDebugfs } from '../src/tools/debugfs.js';
import { DebugfsPool } from '../src/image/debugfs-walk.js';
import { readImageManifest } from '../src/image/debugfs-reader.js';
import { forceRelease } from './helpers/mounts.js';
import { parseLsPSections } from '../src/tools/debugfs-ls.js';
import { Scope } from '../src/cleanup.js';
import { EnvironmentError, ToolError } from '../src/errors.js';

let work: string;
let img: string;
const scope = new Scope();

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-session-'));
  const tree = join(work, 'tree');
  await mkdir(join(tree, 'd\ndebugfs:  \ndebugfs: ls -p <2>'), { recursive: true });
  await writeFile(join(tree, 'd\ndebugfs:  \ndebugfs: ls -p <2>', '#part-image-0-1'), 'x');
  // Targets that read like the end of a batch, a prompt, an echo line and a comment.
  await symlink('a\ndebugfs:  debugfs: "#part-image-0-1"\ndebugfs:  Inode: 2\n', join(tree, 'fake-end'));
  await symlink(`${'long/'.repeat(30)}\n# comment`, join(tree, 'long'));
  for (let i = 0; i < 50; i++) await writeFile(join(tree, `f${i}`), String(i));
  img = join(work, 'tree.img');
  await execa('mke2fs', ['-q', '-F', '-t', 'ext4', '-N', '16384', '-E', 'nodiscard', '-d', tree, img, '64M']);
});
afterAll(async () => {
  await scope.close();
  await rm(work, { recursive: true, force: true });
});

/**
 * What debugfs's command loop prints for `cmds` when it reads them from a
 * file, stderr merged: the banner and the last prompt (before the end of
 * the file) taken off.
 */
async function loopRun(cmds: string[]): Promise<Buffer> {
  const { stdout } = await execa('sh', ['-c', 'debugfs "$1" 2>&1', 'sh', img], {
    input: cmds.map((c) => `${c}\n`).join(''),
    env: { SS_READLINE_PATH: 'none', TZ: 'UTC', LC_ALL: 'C' },
    encoding: 'buffer',
    stripFinalNewline: false,
  });
  const out = Buffer.from(stdout);
  const start = out.indexOf('\n') + 1;
  expect(out.subarray(0, start).toString()).toMatch(/^debugfs \d/);
  expect(out.subarray(out.length - 10).toString()).toBe('debugfs:  ');
  return out.subarray(start, out.length - 10);
}

describe('DebugfsSession', () => {
  it('answers each of several batches given at once with what a run of them prints, byte for byte', async () => {
    const s = await DebugfsSession.open(img, scope);
    expect(s.preamble).toBe('');
    const batches = [
      ['ls -p <2>', 'ls -p <12>'],
      // About 7 MB: more than one read of the output file (4 MB).
      Array.from({ length: 12000 }, (_, i) => `stat <${i + 1}>`),
      // Errors land in the answer too.
      ['stat <999999>', 'ls -p <7>', 'stat <2>'],
      [],
    ];
    const answers = await Promise.all(batches.map((b) => s.run(b)));
    expect(answers[1].length).toBeGreaterThan(4 * 1024 * 1024);
    for (let i = 0; i < 3; i++) expect(answers[i].equals(await loopRun(batches[i])), `batch ${i}`).toBe(true);
    expect(answers[3].length).toBe(0);
    // The names and targets that look like debugfs's lines are in the answers as they are.
    expect(answers[0].toString('latin1')).toContain('#part-image-0-1');
    expect(answers[1].toString('latin1')).toContain('Fast link dest: "a\ndebugfs:  debugfs: "#part-image-0-1"\ndebugfs:  Inode: 2\n"');
    // A prompt, then a command's output, for each.
    expect(answers[2].toString('latin1')).toMatch(/^debugfs: {2}<999999>: /);
    await s.close();
    await expect(s.run(['stat <2>'])).rejects.toThrow(/closed/);
  });

  it('a file that is not a filesystem fails at open, naming why, and leaves no process', async () => {
    const junk = join(work, 'junk.img');
    await writeFile(junk, Buffer.alloc(1024 * 1024, 0x55));
    const err = await DebugfsSession.open(junk, scope).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ToolError);
    expect((err as ToolError).message).toMatch(/while (trying to open|opening filesystem)/);
    expect((await execa('pgrep', ['-f', `debugfs ${junk}`], { reject: false })).stdout).toBe('');
  });

  it('a missing debugfs, or a missing sh, is an error that says what to install, at once', async () => {
    const onlySh = join(work, 'only-sh');
    await mkdir(onlySh, { recursive: true });
    await symlink('/bin/sh', join(onlySh, 'sh')).catch(() => undefined);
    const path = process.env.PATH;
    try {
      // Neither must leave the session waiting for a stdin that nothing ends.
      process.env.PATH = onlySh;
      await expect(DebugfsSession.open(img, scope)).rejects.toMatchObject({ message: 'tool missing: debugfs', hint: expect.stringMatching(/apt-get install e2fsprogs/) });
      process.env.PATH = join(work, 'no-such-dir');
      await expect(DebugfsSession.open(img, scope)).rejects.toBeInstanceOf(EnvironmentError);
      await expect(DebugfsSession.open(img, scope)).rejects.toMatchObject({ message: 'tool missing: sh' });
    } finally {
      process.env.PATH = path;
    }
  });

  it('a debugfs that echoes the lines it reads (libreadline loaded) fails at open, quoting what it printed', async () => {
    const bin = join(work, 'readline-bin');
    await mkdir(bin, { recursive: true });
    const { stdout: real } = await execa('sh', ['-c', 'command -v debugfs']);
    await writeFile(join(bin, 'debugfs'), `#!/bin/sh\nunset SS_READLINE_PATH\nexec ${real} "$@"\n`);
    await chmod(join(bin, 'debugfs'), 0o755);
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      const err = await DebugfsSession.open(img, scope).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ToolError);
      expect((err as ToolError).message).toMatch(/unexpected output at the end of a batch .*#part-image-[0-9a-f]{32}-0\\n/);
    } finally {
      process.env.PATH = path;
    }
  });

  it('the reader reads the names and targets that look like prompts and batch ends as they are', async () => {
    const m = await readImageManifest(img);
    const byPath = new Map(m.entries.map((e) => [e.path, e]));
    expect(byPath.get('/d\ndebugfs:  \ndebugfs: ls -p <2>/#part-image-0-1')).toMatchObject({ type: 'file', size: 1 });
    expect(byPath.get('/fake-end')?.target).toBe('a\ndebugfs:  debugfs: "#part-image-0-1"\ndebugfs:  Inode: 2\n');
    expect(byPath.get('/long')?.target).toBe(`${'long/'.repeat(30)}\n# comment`);
    expect(m.entries.filter((e) => /^\/f\d+$/.test(e.path))).toHaveLength(50);
  });

  it('a debugfs that is killed fails the batches it still owed, and close() settles', async () => {
    const s = await DebugfsSession.open(img, scope);
    const owed = s.run(Array.from({ length: 200000 }, (_, i) => `stat <${(i % 16000) + 1}>`));
    // It fails while the kill below is still being awaited.
    owed.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    await execa('pkill', ['-KILL', '-f', `debugfs ${img}`]);
    await expect(owed).rejects.toBeInstanceOf(ToolError);
    await expect(s.run(['stat <2>'])).rejects.toBeInstanceOf(ToolError);
    await s.close();
  });
});

describe('DebugfsSession, one answer bigger than a read of the output', () => {
  it('answers an ls -p of 16,000 names of 250 bytes (4.4 MB, more than one 4 MB read) whole, and the reader lists every one (an htree folder the kernel made)', async () => {
    // Made by the kernel on a loop mount: mke2fs -d (libext2fs) inserts each
    // name by a scan of the whole folder, and took minutes for these.
    const wide = join(work, 'wide.img');
    await execa('mke2fs', ['-q', '-F', '-t', 'ext4', '-N', '20000', '-E', 'nodiscard', wide, '128M']);
    const mnt = join(work, 'wide-mnt');
    await mkdir(mnt, { recursive: true });
    const names = Array.from({ length: 16000 }, (_, i) => `${String(i).padStart(6, '0')}${'x'.repeat(244)}`);
    await execa('mount', ['-o', 'loop', wide, mnt]);
    try {
      await mkdir(join(mnt, 'd'));
      for (let i = 0; i < names.length; i += 500) await Promise.all(names.slice(i, i + 500).map((n) => writeFile(join(mnt, 'd', n), '')));
    } finally {
      await execa('umount', [mnt]).catch(() => forceRelease(wide));
    }
    const s = await DebugfsSession.open(wide, scope);
    try {
      const { stdout } = await execa('debugfs', ['-R', 'stat /d', wide], { env: { TZ: 'UTC', LC_ALL: 'C' } });
      const dirIno = /^Inode: (\d+)/m.exec(stdout)![1];
      const [answer, after] = await Promise.all([s.run([`ls -p <${dirIno}>`]), s.run(['stat <2>'])]);
      expect(answer.length).toBeGreaterThan(4 * 1024 * 1024);
      const sections = parseLsPSections(answer);
      expect(sections).toHaveLength(1);
      expect(sections[0].errors).toEqual([]);
      expect(sections[0].entries.map((e) => e.name).sort()).toEqual(names);
      // The batch after it is its own.
      expect(after.toString('latin1')).toMatch(/^debugfs: {2}Inode: 2 /);
    } finally {
      await s.close();
    }
    const m = await readImageManifest(wide, { hash: false });
    expect(m.entries.filter((e) => e.path.startsWith('/d/')).map((e) => e.path.slice(3))).toEqual(names);
  }, 120_000);
});

describe('DebugfsPool', () => {
  it('ends a session whose output grew past its limit, goes on in a new one, and leaves no output file', async () => {
    // A fake debugfs first on PATH logs each start.
    const bin = join(work, 'bin');
    await mkdir(bin, { recursive: true });
    const log = join(work, 'starts.log');
    const { stdout: real } = await execa('sh', ['-c', 'command -v debugfs']);
    await writeFile(join(bin, 'debugfs'), `#!/bin/sh\necho start >> ${log}\nexec ${real} "$@"\n`);
    await chmod(join(bin, 'debugfs'), 0o755);
    const path = process.env.PATH;
    const tmpBefore = process.env.TMPDIR;
    // A TMPDIR of its own: the other test processes make and remove debugfs folders in the shared one.
    const tmp = join(work, 'pool-tmp');
    await mkdir(tmp, { recursive: true });
    process.env.PATH = `${bin}:${path}`;
    process.env.TMPDIR = tmp;
    try {
      // One session at a time, ended after 200 KB: a batch of 1,000 stats is about 600 KB.
      const pool = new DebugfsPool(img, 1, 200 * 1024);
      const cmds = Array.from({ length: 1000 }, (_, i) => `stat <${i + 1}>`);
      const want = await loopRun(cmds);
      const got = await Promise.all([1, 2, 3, 4].map(() => pool.run(cmds)));
      for (const g of got) expect(g.equals(want)).toBe(true);
      await pool.close();
      // The one-off run above, the session that took the first two batches
      // (two are handed ahead) and ended after its first answer, and the one
      // that took the last two.
      expect((await readFile(log, 'utf8')).trim().split('\n').length).toBe(3);
      expect(tmpdir()).toBe(tmp);
      expect(await readdir(tmp)).toEqual([]);
    } finally {
      process.env.PATH = path;
      if (tmpBefore === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = tmpBefore;
    }
  });
});
