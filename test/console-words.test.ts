// systemd's console words (boot/console-words.ts) and the boot watch
// (boot/boot-watch.ts), on real nspawn consoles captured on this machine
// type: a plain `systemd-nspawn -b` of the Debian root, broken one way at a
// time, with the colours and carriage returns nspawn prints.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConsoleWords, consoleWordsOf, recogniseConsoleLine } from '../src/boot/console-words.js';
import { BootWatch, FINAL_GRACE_MS } from '../src/boot/boot-watch.js';
import { judgeBoot } from '../src/boot/probe.js';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/boot/console/${name}`, import.meta.url), 'utf8');

describe('console words on real nspawn consoles', () => {
  it('finds nothing in a healthy boot (its "Failed to create symlink /sys/fs/cgroup/..." lines are not a failure)', () => {
    const text = fixture('healthy-boot.txt');
    expect(text).toContain('Failed to create symlink /sys/fs/cgroup/');
    expect(consoleWordsOf(text).seen).toEqual([]);
  });

  it('reads a missing default.target and the fall-back to rescue mode', () => {
    const w = consoleWordsOf(fixture('rescue-default-target-missing.txt'));
    expect(w.seen.map((x) => [x.code, x.unit, x.final])).toEqual([
      ['default-target-missing', 'default.target', false],
      ['rescue-mode', 'rescue.target', true],
      ['rescue-mode', 'rescue.target', true],
      ['rescue-mode', 'rescue.target', true],
    ]);
    expect(w.seen[0].line).toBe('Unit default.target not found.');
    expect(w.seen[1].line).toBe('Falling back to rescue.target.');
    expect(w.cause()?.line).toBe('Falling back to rescue.target.');
  });

  it('reads a masked default.target', () => {
    const w = consoleWordsOf(fixture('rescue-default-target-masked.txt'));
    expect(w.seen[0]).toMatchObject({ code: 'default-target-masked', unit: 'default.target', line: 'Unit default.target is masked.' });
    expect(w.seen.some((x) => x.code === 'rescue-mode')).toBe(true);
  });

  it('reads a failed mount, the dependency it broke and emergency mode', () => {
    const w = consoleWordsOf(fixture('emergency-failed-mount.txt'));
    expect(w.seen.map((x) => [x.code, x.unit])).toEqual([
      ['unit-failed-console', 'srv-bad.mount'],
      ['dependency-failed', 'Local File Systems'],
      ['emergency-mode', 'emergency.target'],
      ['emergency-mode', 'emergency.target'],
    ]);
    expect(w.seen[0].line).toBe('[FAILED] Failed to mount srv-bad.mount - A mount that fails.');
    expect(w.cause()?.code).toBe('emergency-mode');
  });

  it('recognises single lines, whatever the colours', () => {
    expect(recogniseConsoleLine('[\x1b[0;1;31mFAILED\x1b[0m] Failed to start \x1b[0;1;39mfoo.service\x1b[0m - Foo.\r')).toMatchObject({ code: 'unit-failed-console', unit: 'foo.service', final: false });
    expect(recogniseConsoleLine('[DEPEND] Dependency failed for bar.service - Bar.')).toMatchObject({ code: 'dependency-failed', unit: 'bar.service' });
    expect(recogniseConsoleLine('You are in emergency mode. After logging in, type "journalctl -xb" to view')).toMatchObject({ code: 'emergency-mode', final: true });
    expect(recogniseConsoleLine('PART-IMAGE-PROBE failed unit=x.service result=exit-code status=1')).toBeUndefined();
    expect(recogniseConsoleLine('[  OK  ] Reached target multi-user.target - Multi-User System.')).toBeUndefined();
  });

  it('joins lines split across chunks', () => {
    const w = new ConsoleWords();
    expect(w.feed('Falling back to res')).toEqual([]);
    expect(w.feed('cue.target.\r\nnext')).toMatchObject([{ code: 'rescue-mode' }]);
  });
});

describe('the boot watch (fake clock)', () => {
  function watched(stallMs: number) {
    let now = 1_000_000;
    const watch = new BootWatch(stallMs, () => now);
    let stops = 0;
    const feed = (s: string) => watch.watch(s, () => stops++);
    return { watch, feed, advance: (ms: number) => { now += ms; watch.tick(); }, stops: () => stops };
  }

  it('ends a rescue boot FINAL_GRACE_MS after systemd said so', () => {
    const w = watched(30_000);
    w.feed('Unit default.target not found.\nFalling back to rescue.target.\n');
    w.advance(FINAL_GRACE_MS - 1);
    expect(w.stops()).toBe(0);
    w.advance(1);
    expect(w.stops()).toBe(1);
    expect(w.watch.finish()).toMatchObject({ stoppedBy: 'console', cause: { code: 'rescue-mode' } });
  });

  it('ends a stalled boot when no job changed for the stall time, and never one that progresses', () => {
    const w = watched(10_000);
    w.feed('systemd 252 running in system mode\n');
    for (let i = 0; i < 10; i++) {
      w.advance(9_000);
      w.feed(`PART-IMAGE-PROBE progress jobs=${i}\n`);
    }
    expect(w.stops()).toBe(0);
    w.advance(10_000);
    expect(w.stops()).toBe(1);
    expect(w.watch.finish()).toMatchObject({ stoppedBy: 'stall', stalledForMs: 10_000, stoppedAtMs: 100_000 });
  });

  it('is disarmed by the probe report: the container powers itself off', () => {
    const w = watched(5_000);
    w.feed('PART-IMAGE-PROBE begin\nPART-IMAGE-PROBE end\n');
    w.advance(60_000);
    expect(w.stops()).toBe(0);
    expect(w.watch.finish().stoppedBy).toBeUndefined();
  });
});

describe('judgeBoot with the console words', () => {
  const opts = { bootTimeoutMs: 120_000, allowFailedUnits: [] };

  it('names rescue mode with the lines it saw, and the missing default target as its path', () => {
    const text = fixture('rescue-default-target-missing.txt');
    const j = judgeBoot({ stdout: text, stderr: '', exitCode: -1, timedOut: false }, opts, { ...consoleWordsOf(text), words: consoleWordsOf(text).seen, stoppedBy: 'console', stoppedAtMs: 5000 });
    expect(j.findings.map((f) => [f.code, f.path])).toEqual([['rescue-mode', 'default.target']]);
    expect(j.findings[0].message).toContain('the console said "Unit default.target not found.", then "Falling back to rescue.target."');
    expect(j.details.stoppedBy).toBe('console');
  });

  it('reads the words afterwards too (the VM path, not watched live)', () => {
    const text = fixture('rescue-default-target-masked.txt');
    const j = judgeBoot({ stdout: text, stderr: '', exitCode: 0, timedOut: false }, opts);
    expect(j.findings.map((f) => [f.code, f.path])).toEqual([['rescue-mode', 'default.target']]);
    expect(j.findings[0].message).toContain('Unit default.target is masked.');
  });

  it('a healthy console with a complete probe report passes', () => {
    const text = `${fixture('healthy-boot.txt')}\nPART-IMAGE-PROBE begin\nPART-IMAGE-PROBE state=running\nPART-IMAGE-PROBE default-target=graphical.target active=active\nPART-IMAGE-PROBE end\n`;
    expect(judgeBoot({ stdout: text, stderr: '', exitCode: 0, timedOut: false }, opts).findings).toEqual([]);
  });

  it('a stalled boot with a console failure and no probe names the unit first', () => {
    const text = '[FAILED] Failed to start foo.service - Foo.\n';
    const j = judgeBoot({ stdout: text, stderr: '', exitCode: -1, timedOut: false }, opts, {
      words: consoleWordsOf(text).seen, cause: consoleWordsOf(text).cause(), stoppedBy: 'stall', stoppedAtMs: 31_000, stalledForMs: 30_000,
    });
    expect(j.findings.map((f) => [f.code, f.path])).toEqual([['unit-failed', 'foo.service'], ['boot-timeout', undefined]]);
    expect(j.findings[1].message).toMatch(/^the boot stalled: no boot job changed for 30 s \(stopped after 31 s\)/);
  });
});
