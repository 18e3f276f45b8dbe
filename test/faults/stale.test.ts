// After SIGKILL no cleanup can run (issue 8, §3): the next run finds the temp
// files whose owner is gone, in $TMPDIR and beside the output, removes them
// and says so in one line; it never touches the files of a live run.
import { execa } from 'execa';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RUN_TAG, ownerGone, ownerOfName, processStartTime, sweepStale } from '../../src/stale.js';
import { CLI, runCliProcess as runCli } from '../helpers/cli.js'; // the sweep runs once per folder and process
import { debianRootTar } from '../helpers/debian-root.js';
import { isClean, leftovers, processesNaming } from '../helpers/host-state.js';
import { RAM_PARENT } from '../../src/input/tar-staging.js';
import { runAndInterrupt } from '../helpers/interrupt.js';

let work: string;
let tar: string;
let small: string;

const POPULATE = { stderr: /exec debugfs .* -w -f / };
const READBACK = { stderr: /^ {2}fsck: \d+ ms/m };
const SWEEP_LINE = /^part-image: removed (\d+) leftovers? of killed runs \(pid ([\d, ]+)\): [\d.]+ MiB$/m;

beforeAll(async () => {
  tar = await debianRootTar();
  work = await mkdtemp(join(tmpdir(), 'pi-stale-'));
  small = join(work, 'small');
  await mkdir(join(small, 'etc'), { recursive: true });
  await writeFile(join(small, 'etc', 'hello'), 'hello\n');
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

async function caseDirs(name: string) {
  const dir = join(work, name);
  const tmp = join(dir, 'tmp');
  const out = join(dir, 'out');
  await mkdir(tmp, { recursive: true });
  await mkdir(out, { recursive: true });
  return { dir, tmp, out };
}

/** Children of a killed run go on until they finish: wait for them, so that only files remain. */
async function orphansGone(roots: string[]): Promise<void> {
  while ((await processesNaming(roots)).length) await sleep(100);
}

const smallBuild = (out: string) => ['build', '--input', small, '--output', join(out, 'small.raw'), '--skip', 'diagnose,nspawn'];

describe('leftovers of killed runs', () => {
  it('SIGKILL during populate, then during readback: each next build removes what the killed run left, and says so in one line', async () => {
    const { tmp, out } = await caseDirs('killed');
    const pids: number[] = [];
    for (const marker of [POPULATE, READBACK]) {
      const r = await runAndInterrupt(['build', '--input', tar, '--output', join(out, 'root.raw'), '--verbose'], { TMPDIR: tmp }, { marker, signals: ['SIGKILL'] });
      expect(r.signal, r.stderr.slice(-1500)).toBe('SIGKILL');
      // The second killed run already removed what the first one left, before it was killed itself.
      // (RAM_PARENT is shared: the line may also name other dead processes, e.g. test workers that read a tar.)
      if (pids.length) expect(SWEEP_LINE.exec(r.stderr)?.[2].split(', '), r.stderr.slice(0, 1500)).toContain(String(pids[0]));
      pids.push(r.pid);
    }
    await orphansGone([tmp, out]);
    const before = await leftovers(tmp, out);
    expect(before.tmp.length, 'a killed run leaves its temp dirs').toBeGreaterThan(0);
    expect(before.beside.length, 'and its image beside the output').toBeGreaterThan(0);

    // The killed runs' small files staged in RAM: that folder is shared, so a build in another test
    // process may sweep them first, and this run may also sweep what other dead processes left there.
    const ramOf = async (pid: number) => (await readdir(RAM_PARENT)).filter((n) => n.startsWith(`part-image-tar-${pid}-`));
    const r = await runCli(smallBuild(out), { env: { TMPDIR: tmp } });
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.stderr.split('\n').filter((l) => /leftover/.test(l));
    expect(lines, r.stderr).toHaveLength(1);
    const m = SWEEP_LINE.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(before.tmp.length + before.beside.length);
    for (const pid of pids) expect(await ramOf(pid), `RAM staging of the killed run ${pid}`).toEqual([]);
    expect(m![2].split(', ')).toContain(String(pids[1]));
    process.stdout.write(`after SIGKILL: ${before.tmp.length} temp dirs, ${before.beside.length} file(s) beside the output; the next run said: ${m![0]}\n`);
    const after = await leftovers(tmp, out, ['small.raw']);
    expect(isClean(after), JSON.stringify(after)).toBe(true);
  }, 300_000);

  it('two runs side by side: the second never removes the first one\'s files, and the first is accepted', async () => {
    const { tmp, out } = await caseDirs('parallel');
    const first = execa('node', [CLI, 'build', '--input', tar, '--output', join(out, 'root.raw'), '--verbose', '--skip', 'nspawn'], {
      reject: false, env: { ...process.env, TMPDIR: tmp },
    });
    let stderr = '';
    let ended = false;
    first.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    void first.finally(() => (ended = true));
    // The first run holds its staging folder, build dir, debugfs dirs and the temp image: start the second then.
    while (!POPULATE.stderr.test(stderr) && !ended) await sleep(20);
    expect(ended, 'the first run ended before its populate').toBe(false);
    const second = await runCli(smallBuild(out), { env: { TMPDIR: tmp } });
    expect(second.exitCode, second.stderr).toBe(0);
    // RAM_PARENT is shared with every other test process: the second run may sweep what a dead one left
    // there, but it must never take the first run (alive) for a killed one, nor keep anything back.
    const swept = SWEEP_LINE.exec(second.stderr);
    if (swept) expect(swept[2].split(', '), second.stderr).not.toContain(String(first.pid));
    expect(second.stderr.split('\n').filter((l) => /leftover/.test(l) && !SWEEP_LINE.test(l)), second.stderr).toEqual([]);
    const r = await first;
    expect(r.exitCode, stderr.slice(-2000)).toBe(0);
    const after = await leftovers(tmp, out, ['root.raw', 'small.raw']);
    expect(isClean(after), JSON.stringify(after)).toBe(true);
  }, 300_000);
});

describe('who owns a temp file (stale.ts)', () => {
  it('parses the owner out of every temp name part-image makes', () => {
    const [pid, start, tag] = RUN_TAG.split('-');
    expect(ownerOfName(`part-image-debugfs-${RUN_TAG}-AbC123`)).toEqual({ pid: Number(pid), startTime: start, tag });
    expect(ownerOfName(`part-image-${RUN_TAG}-x1Y2z3`)).toEqual({ pid: Number(pid), startTime: start, tag });
    expect(ownerOfName(`.part-image-stage-${RUN_TAG}-x1Y2z3`)).toEqual({ pid: Number(pid), startTime: start, tag });
    expect(ownerOfName(`.root.raw.part-image-${RUN_TAG}.tmp`)).toEqual({ pid: Number(pid), startTime: start, tag });
    expect(ownerOfName(`.root.qcow2.part-image-${RUN_TAG}.tmp.qcow2`)).toEqual({ pid: Number(pid), startTime: start, tag });
    expect(ownerOfName('.root.raw.part-image-4242.tmp')).toEqual({ pid: 4242 });
    // Not ours: no pid in the name, or another tool's file.
    expect(ownerOfName('part-image-debugfs-AbC123')).toBeUndefined();
    expect(ownerOfName('root.raw')).toBeUndefined();
    expect(ownerOfName('root.raw.rejected')).toBeUndefined();
    expect(ownerOfName('.root.raw.part-image-abc.tmp')).toBeUndefined();
  });

  it('removes only what a gone or reused pid owns; keeps live, own and foreign-namespace files', async () => {
    const dir = await mkdtemp(join(work, 'owners-'));
    const [, , tag] = RUN_TAG.split('-');
    const live = execa('sleep', ['600']);
    const livePid = live.pid!;
    while (!(await processStartTime(livePid))) await sleep(10);
    const liveStart = await processStartTime(livePid);
    // A pid that no process has: a finished child's.
    const gone = execa('true');
    await gone;
    const gonePid = gone.pid!;
    const names = {
      gone: `part-image-tar-${gonePid}-123-${tag}-aaaaaa`,
      reused: `part-image-tar-${livePid}-1-${tag}-bbbbbb`,
      live: `part-image-tar-${livePid}-${liveStart}-${tag}-cccccc`,
      own: `part-image-tar-${RUN_TAG}-dddddd`,
      foreign: `part-image-tar-${gonePid}-123-${tag === 'ffffff' ? '000000' : 'ffffff'}-eeeeee`,
      goneBeside: `.root.raw.part-image-${gonePid}-9-${tag}.tmp`,
      legacyGone: `.root.raw.part-image-${gonePid}.tmp.qcow2`,
      unrelated: 'notes.txt',
    };
    for (const [k, n] of Object.entries(names)) {
      if (k === 'goneBeside' || k === 'legacyGone' || k === 'unrelated') await writeFile(join(dir, n), Buffer.alloc(4096));
      else {
        await mkdir(join(dir, n));
        await writeFile(join(dir, n, 'blob'), Buffer.alloc(8192));
      }
    }
    try {
      expect(await ownerGone(ownerOfName(names.live)!)).toBe(false);
      expect(await ownerGone(ownerOfName(names.reused)!)).toBe(true);
      const r = await sweepStale([dir]);
      expect(r.removed.map((p) => p.slice(dir.length + 1)).sort()).toEqual([names.gone, names.reused, names.goneBeside, names.legacyGone].sort());
      expect((await readdir(dir)).sort()).toEqual([names.live, names.own, names.foreign, names.unrelated].sort());
      expect(r.pids.sort()).toEqual([gonePid, livePid].sort());
      expect(r.bytes).toBeGreaterThan(0);
    } finally {
      live.kill('SIGKILL');
      await live.catch(() => undefined);
    }
  });
});
