// The boot probe's scripts, run by sh against a stand-in systemctl (what the
// scripts make of its answers is the point here; the real boot is in
// nspawn.test.ts and nspawn-vm.test.ts). They write under /run, so each run
// gets a private /run (a mount namespace with a tmpfs on it).
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobsEverySec, writeProbe } from '../src/boot/probe-files.js';

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-probe-files-'));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/**
 * Runs `script` of a probe made in `dir` `rounds` times in one private /run,
 * with `systemctl` the body of a stand-in that notes its arguments;
 * `pauseAfterFirst` seconds pass between the first round and the second.
 */
async function runRounds(dir: string, script: string, rounds: number, systemctl: string, pauseAfterFirst = 0): Promise<{ out: string; calls: string[] }> {
  const bin = join(dir, 'bin');
  await mkdir(bin, { recursive: true });
  const calls = join(dir, 'calls');
  await writeFile(calls, '');
  await writeFile(join(bin, 'systemctl'), `#!/bin/sh\necho "$*" >> ${calls}\n${systemctl}\n`);
  await chmod(join(bin, 'systemctl'), 0o755);
  await writeFile(join(bin, 'journalctl'), '#!/bin/sh\necho "a journal line"\n');
  await chmod(join(bin, 'journalctl'), 0o755);
  const loop = Array.from({ length: rounds }, (_, i) => `${i === 1 && pauseAfterFirst ? `sleep ${pauseAfterFirst}; ` : ''}sh /run/part-image-probe/${script}`).join('; ');
  const r = await execa('unshare', ['-m', 'sh', '-c', `mount -t tmpfs tmpfs /run && mkdir /run/part-image-probe && cp ${dir}/*.sh /run/part-image-probe/ && PATH=${bin}:$PATH; ${loop}`], { reject: false });
  expect(r.stderr).toBe('');
  return { out: r.stdout, calls: (await readFile(calls, 'utf8')).trim().split('\n').filter(Boolean) };
}

describe('the boot probe files', () => {
  it('polls every tenth of the stall limit, 1-3 s', () => {
    expect([1_000, 5_000, 15_000, 20_000, 30_000, 600_000].map(jobsEverySec)).toEqual([1, 1, 1, 2, 3, 3]);
  });

  it('powers off at once only when the run reads the report file', async () => {
    const soft = await mkdtemp(join(work, 'soft-'));
    const hard = await mkdtemp(join(work, 'hard-'));
    await writeProbe(soft, 30_000);
    await writeProbe(hard, 30_000, { forceOff: true });
    expect(await readFile(join(soft, 'probe.sh'), 'utf8')).toMatch(/^systemctl --no-block poweroff$/m);
    expect(await readFile(join(hard, 'probe.sh'), 'utf8')).toMatch(/^systemctl --force --force poweroff$/m);
    expect(await readFile(join(hard, 'part-image-jobs.timer'), 'utf8')).toMatch(/^OnUnitInactiveSec=3s$/m);
  });

  it('reports the state, the default target and no failed unit with two systemctl calls', async () => {
    const dir = await mkdtemp(join(work, 'probe-'));
    await writeProbe(dir, 30_000, { forceOff: true });
    const { out, calls } = await runRounds(dir, 'probe.sh', 1, [
      'case "$*" in',
      '  *SystemState*) printf "SystemState=running\\nNFailedUnits=0\\n" ;;',
      '  *default.target*) printf "Id=graphical.target\\nActiveState=active\\n" ;;',
      'esac',
    ].join('\n'));
    expect(out.split('\n')).toEqual([
      'PART-IMAGE-PROBE begin',
      'PART-IMAGE-PROBE state=running',
      'PART-IMAGE-PROBE default-target=graphical.target active=active',
      'PART-IMAGE-PROBE end',
    ]);
    expect(calls).toEqual(['show -p SystemState -p NFailedUnits', 'show -p Id -p ActiveState default.target', '--force --force poweroff']);
  });

  it('lists the failed units with their journal when there are some', async () => {
    const dir = await mkdtemp(join(work, 'failed-'));
    await writeProbe(dir, 30_000);
    const { out } = await runRounds(dir, 'probe.sh', 1, [
      'case "$*" in',
      '  *SystemState*) printf "SystemState=degraded\\nNFailedUnits=1\\n" ;;',
      '  *default.target*) printf "Id=multi-user.target\\nActiveState=active\\n" ;;',
      '  list-units*) echo "bad.service loaded failed failed Bad" ;;',
      '  *Result*) echo exit-code ;;',
      '  *ExecMainStatus*) echo 3 ;;',
      'esac',
    ].join('\n'));
    expect(out).toContain('PART-IMAGE-PROBE state=degraded');
    expect(out).toContain('PART-IMAGE-PROBE failed unit=bad.service result=exit-code status=3');
    expect(out).toContain('PART-IMAGE-PROBE journal unit=bad.service | a journal line');
  });

  it('jobs.sh: one progress line per change of the pending jobs, one program a round while jobs are pending, quiet once the boot is over', async () => {
    const dir = await mkdtemp(join(work, 'jobs-'));
    await writeProbe(dir, 30_000);
    // Rounds 1-2: the same two jobs; round 3: one left; round 4: none, the system runs.
    const { out, calls } = await runRounds(dir, 'jobs.sh', 4, [
      `n=$(grep -c '^list-jobs' ${join(dir, 'calls')})`,
      'case "$1" in',
      '  list-jobs)',
      '    [ $n -le 2 ] && printf "12 a.service start running\\n13 b.service start waiting\\n7 part-image-jobs.service start running\\n"',
      '    [ $n = 3 ] && printf "13 b.service start running\\n"',
      '    exit 0 ;;',
      '  is-system-running) echo running ;;',
      'esac',
    ].join('\n'));
    expect(out.split('\n')).toEqual(['PART-IMAGE-PROBE progress jobs=2', 'PART-IMAGE-PROBE progress jobs=1']);
    expect(calls.filter((c) => c.startsWith('list-jobs'))).toHaveLength(4);
    expect(calls.filter((c) => c === 'is-system-running')).toHaveLength(1);
  });

  it('jobs.sh in emergency mode: the snapshot with the failed units at once, then poweroff', async () => {
    const dir = await mkdtemp(join(work, 'emergency-'));
    await writeProbe(dir, 30_000);
    const { out, calls } = await runRounds(dir, 'jobs.sh', 1, [
      'case "$1" in',
      '  is-system-running) echo maintenance ;;',
      '  list-units) echo "local-fs.target loaded failed failed Local" ;;',
      '  show) echo dependency ;;',
      'esac',
    ].join('\n'));
    expect(out).toContain('PART-IMAGE-PROBE jobs-begin state=maintenance');
    expect(out).toContain('PART-IMAGE-PROBE failed unit=local-fs.target');
    expect(out.split('\n').slice(-2)).toEqual(['PART-IMAGE-PROBE jobs-end', 'PART-IMAGE-PROBE emergency']);
    expect(calls.at(-1)).toBe('--no-block poweroff');
  });

  it('jobs.sh once the boot is late: the pending jobs, with the journal of the running ones, and only when they change', async () => {
    const dir = await mkdtemp(join(work, 'late-'));
    // A 2 s limit: snapshots from 1 s on; the rounds here are a second apart.
    await writeProbe(dir, 2_000);
    // Round 1: progress only; round 2, late: the snapshot; round 3, nothing changed: nothing.
    const { out } = await runRounds(dir, 'jobs.sh', 3, 'case "$1" in list-jobs) printf "12 slow.service start running\\n" ;; esac', 1.2);
    expect(out.split('\n')).toEqual([
      'PART-IMAGE-PROBE progress jobs=1',
      'PART-IMAGE-PROBE jobs-begin state=starting',
      'PART-IMAGE-PROBE job id=12 unit=slow.service type=start state=running',
      'PART-IMAGE-PROBE journal unit=slow.service | a journal line',
      'PART-IMAGE-PROBE jobs-end',
    ]);
  });
});
