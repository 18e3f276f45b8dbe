// The mechanism behind "an interrupt during populate leaves the staging
// folder and the temp image" (issue 8, §3), in-process, without timings:
// shutdown() (what the signal handler runs) must wait for a scope that is
// already closing, and must not remove a folder while a host tool still
// writes into it. shutdown() is for good, so this file runs it once.
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Scope, shutdown, withScope } from '../../src/cleanup.js';
import { run } from '../../src/exec.js';
import { pidAlive } from '../../src/stale.js';

let work: string;
const savedTmp = process.env.TMPDIR;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-shutdown-'));
  process.env.TMPDIR = work;
});
afterAll(async () => {
  process.env.TMPDIR = savedTmp;
  await rm(work, { recursive: true, force: true });
});

describe('shutdown()', () => {
  it('waits for closing scopes and for children to exit; closes each scope once', async () => {
    // 1. A scope whose close is under way (as withScope closes it when the abort makes its work fail).
    let releaseDisposer!: () => void;
    const disposerMayEnd = new Promise<void>((r) => (releaseDisposer = r));
    let disposerRuns = 0;
    let disposerDone = false;
    const closing = new Scope();
    closing.defer('slow disposer', async () => {
      disposerRuns++;
      await disposerMayEnd;
      disposerDone = true;
    });
    const firstClose = closing.close();
    expect(closing.close()).toBe(firstClose);

    // 2. A host tool writing into its scope's temp dir, which takes a moment to stop after SIGTERM.
    let childPid = 0;
    let aliveAtRemoval: boolean | undefined;
    let dir = '';
    const working = withScope(async (scope) => {
      dir = await scope.tempDir('part-image-writer-');
      scope.defer('look at the child before the dir goes', () => {
        aliveAtRemoval = pidAlive(childPid);
      });
      const script = 'trap \'sleep 0.3; echo late > "$1/late"; exit 0\' TERM; echo $$ > "$1/pid"; while :; do sleep 0.05; done';
      await run('sh', ['-c', script, 'sh', dir], { okCodes: 'any' });
    }).catch((e: Error) => e);
    while (!existsSync(join(dir || work, 'pid'))) await sleep(10);
    childPid = Number(readFileSync(join(dir, 'pid'), 'utf8'));

    let shutdownDone = false;
    const down = shutdown().then(() => (shutdownDone = true));
    // shutdown() cannot finish while a scope's disposer is still running.
    await Promise.race([down, sleep(500)]);
    expect(shutdownDone).toBe(false);
    releaseDisposer();
    await down;
    expect(disposerDone).toBe(true);
    expect(disposerRuns).toBe(1);
    expect(await firstClose).toEqual([]);
    // The child had exited (after writing its last file) before its dir was removed.
    expect(aliveAtRemoval).toBe(false);
    expect(pidAlive(childPid)).toBe(false);
    expect(existsSync(dir)).toBe(false);
    await working;
    // A temp dir asked for after the shutdown started is refused, and nothing is left.
    await expect(new Scope().tempDir()).rejects.toThrow(/interrupted/);
    expect(await readdir(work)).toEqual([]);
  });
});
