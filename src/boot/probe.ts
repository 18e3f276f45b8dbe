// The judge of the nspawn stage's boot probe: the parser of what the probe
// files (probe-files.ts) print (PART-IMAGE-PROBE lines), and the verdict on a
// boot. Pure; wherever the boot runs (host or VM), the same code judges it.
import { isNspawnNoise } from '../tools/nspawn.js';
import { ANSI, consoleTail } from './console.js';
import type { Finding } from '../types.js';
import { PROBE_MARK } from './probe-files.js';
import { consoleWordsOf, type ConsoleWord } from './console-words.js';
import type { BootWatchResult } from './boot-watch.js';

// ---- parsing --------------------------------------------------------------

export interface FailedUnit {
  unit: string;
  result?: string;
  status?: string;
  journal: string[];
}

export interface PendingJob {
  id: number;
  unit: string;
  type: string;
  state: string;
  journal: string[];
}

export interface JobsSnapshot {
  state: string;
  jobs: PendingJob[];
  failed: FailedUnit[];
}

export interface ProbeReport {
  /** The final probe ran to its end marker. */
  complete: boolean;
  state?: string;
  defaultTarget?: string;
  defaultTargetState?: string;
  failed: FailedUnit[];
  /** The last complete pending-jobs snapshot, if the jobs probe printed one. */
  lastJobs?: JobsSnapshot;
  /** The jobs probe found the system in emergency mode (and powered it off). */
  emergency: boolean;
}


function fields(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of s.matchAll(/(\w[\w-]*)=(\S*)/g)) out[m[1]] = m[2];
  return out;
}

/** Parse the marker lines out of nspawn's console output. Other lines are ignored. */
export function parseProbeOutput(text: string): ProbeReport {
  const report: ProbeReport = { complete: false, failed: [], emergency: false };
  let section: 'none' | 'probe' | 'jobs' = 'none';
  let resume: 'none' | 'probe' = 'none';
  let snap: JobsSnapshot | undefined;
  const attach = (list: { unit: string; journal: string[] }[], unit: string, line: string) => {
    const target = [...list].reverse().find((x) => x.unit === unit);
    target?.journal.push(line);
  };
  for (const raw of text.split('\n')) {
    const line = raw.replace(ANSI, '').replace(/\r/g, '');
    const at = line.indexOf(`${PROBE_MARK} `);
    if (at < 0) continue;
    const body = line.slice(at + PROBE_MARK.length + 1);
    const journal = /^journal unit=(\S+) \| (.*)$/.exec(body);
    if (journal) {
      const [, unit, l] = journal;
      if (section === 'probe') attach(report.failed, unit, l);
      else if (section === 'jobs' && snap) {
        attach(snap.failed, unit, l);
        attach(snap.jobs, unit, l);
      }
      continue;
    }
    if (body === 'begin') {
      section = 'probe';
      report.failed = [];
      continue;
    }
    if (body === 'end') {
      if (section === 'probe') report.complete = true;
      section = 'none';
      continue;
    }
    if (body === 'emergency') {
      report.emergency = true;
      continue;
    }
    if (body.startsWith('jobs-begin')) {
      // A snapshot inside the probe's report (an older probe, or a console that
      // split a write) is a block of its own: the report goes on after it.
      if (section === 'probe') resume = 'probe';
      section = 'jobs';
      snap = { state: fields(body).state ?? 'unknown', jobs: [], failed: [] };
      continue;
    }
    if (body === 'jobs-end') {
      if (snap) report.lastJobs = snap;
      snap = undefined;
      section = resume;
      resume = 'none';
      continue;
    }
    const f = fields(body);
    if (body.startsWith('state=') && section === 'probe') report.state = f.state;
    else if (body.startsWith('default-target=') && section === 'probe') {
      report.defaultTarget = f['default-target'];
      report.defaultTargetState = f.active;
    } else if (body.startsWith('failed ') && f.unit) {
      const u: FailedUnit = { unit: f.unit, result: f.result || undefined, status: f.status || undefined, journal: [] };
      if (section === 'probe') report.failed.push(u);
      else if (section === 'jobs' && snap) snap.failed.push(u);
    } else if (body.startsWith('job ') && section === 'jobs' && snap && f.unit) {
      snap.jobs.push({ id: Number(f.id), unit: f.unit, type: f.type ?? '', state: f.state ?? '', journal: [] });
    }
  }
  return report;
}

/** Is `unit` covered by the allow list? "foo" allows "foo.service". */
export function isAllowed(unit: string, allow: readonly string[]): boolean {
  return allow.some((a) => a === unit || (!a.includes('.') && `${a}.service` === unit));
}

/** The last `n` lines of container output, without colours and nspawn's farewell line. */
export function outputTail(text: string, n: number): string[] {
  return consoleTail(text, Infinity).filter((l) => !isNspawnNoise(l)).slice(-n);
}

function unitFinding(u: FailedUnit): Finding {
  const why = [u.result && u.result !== 'success' ? `result ${u.result}` : '', u.status && u.status !== '0' ? `exit status ${u.status}` : '']
    .filter(Boolean)
    .join(', ');
  // The most telling line: the unit's own last words, else systemd's exit line, else the last line.
  const own = u.journal.filter((l) => !/ systemd\[1\]: /.test(l) && !/\]: +dmesg\(1\) may have more information/.test(l));
  const last = own.at(-1) ?? u.journal.find((l) => /Main process exited|code=|status=/.test(l)) ?? u.journal.at(-1);
  return {
    code: 'unit-failed',
    path: u.unit,
    message: `unit ${u.unit} failed${why ? ` (${why})` : ''}${last ? `: ${last.replace(/^.*?\]: /, '').trim().replace(/\.$/, '')}` : ''}; see its journal lines in "actual", or allow it with --allow-failed-unit ${u.unit}`,
    actual: u.journal,
  };
}

/** Judge a boot-mode run. Exported for unit tests. */
export function judgeBoot(
  out: { stdout: string; stderr: string; exitCode: number; timedOut: boolean },
  opts: { bootTimeoutMs: number; allowFailedUnits: readonly string[]; bootStallMs?: number },
  watched?: BootWatchResult,
): { findings: Finding[]; details: Record<string, unknown> } {
  const text = `${out.stdout}\n${out.stderr}`;
  const probe = parseProbeOutput(text);
  // A run that was not watched live (the VM's) is read the same way afterwards.
  const seen = watched ?? { words: consoleWordsOf(text).seen, cause: consoleWordsOf(text).cause() };
  const final = seen.words.find((w) => w.final);
  const said = (ws: readonly ConsoleWord[]) => ws.slice(0, 3).map((w) => JSON.stringify(w.line)).join(', then ');
  const findings: Finding[] = [];
  const allowed: string[] = [];
  const details: Record<string, unknown> = {
    state: probe.state,
    defaultTarget: probe.defaultTarget,
    defaultTargetState: probe.defaultTargetState,
    exitCode: out.exitCode,
    timedOut: out.timedOut,
  };
  const addFailed = (units: FailedUnit[]) => {
    for (const u of units) {
      if (isAllowed(u.unit, opts.allowFailedUnits)) allowed.push(u.unit);
      else findings.push(unitFinding(u));
    }
  };
  if (probe.complete) {
    if (probe.defaultTargetState !== 'active') {
      findings.push({
        code: 'default-target-not-reached',
        ...(probe.defaultTarget ? { path: probe.defaultTarget } : {}),
        message: `the default target ${probe.defaultTarget ?? '(unknown)'} is ${probe.defaultTargetState ?? 'unknown'} after the boot (system state ${probe.state ?? 'unknown'}); see the failed units`,
        expected: 'active',
        actual: probe.defaultTargetState,
      });
    }
    addFailed(probe.failed);
  } else if (probe.emergency || probe.lastJobs?.state === 'maintenance') {
    const failed = probe.lastJobs?.failed ?? [];
    findings.push({
      code: 'emergency-mode',
      message: `the boot fell into emergency mode (system state maintenance) instead of reaching the default target${failed.length ? `; failed: ${failed.map((u) => u.unit).join(', ')}` : ''}; fix the failed units (often a mount in /etc/fstab or local-fs.target)`,
      actual: failed.map((u) => u.unit),
    });
    // Here a failed unit is a finding even when allowed: it is why the boot stopped.
    for (const u of failed) findings.push(unitFinding(u));
    details.state = 'maintenance';
  } else if (final) {
    // systemd said so on the console: rescue or emergency mode, no default target.
    const upTo = seen.words.slice(0, seen.words.indexOf(final) + 1);
    const missing = upTo.find((w) => w.code.startsWith('default-target-'));
    const failed = probe.lastJobs?.failed ?? [];
    const mode = final.code === 'rescue-mode' ? 'rescue' : 'emergency';
    findings.push({
      code: final.code,
      path: missing?.unit ?? upTo.find((w) => w.unit && !w.final)?.unit ?? final.unit,
      message: `the boot fell into ${mode} mode instead of reaching the default target: the console said ${said(upTo.slice(-3))}${failed.length ? `; failed: ${failed.map((u) => u.unit).join(', ')}` : ''}; ${missing ? `make ${missing.unit} point to a target that exists (systemctl set-default in the root tree)` : 'fix the unit that failed first'}`,
      actual: upTo.map((w) => w.line),
    });
    for (const u of failed) findings.push(unitFinding(u));
    details.state = mode === 'rescue' ? 'rescue' : 'maintenance';
  } else if (out.timedOut || watched?.stoppedBy === 'stall') {
    const snap = probe.lastJobs && { ...probe.lastJobs, jobs: probe.lastJobs.jobs.filter((j) => !j.unit.startsWith('part-image-')) };
    const stalled = !out.timedOut && watched?.stoppedBy === 'stall';
    const secs = Math.round(opts.bootTimeoutMs / 1000);
    const within = stalled
      ? `the boot stalled: no boot job changed for ${Math.round((watched?.stalledForMs ?? 0) / 1000)} s (stopped after ${Math.round((watched?.stoppedAtMs ?? 0) / 1000)} s)`
      : `the boot did not finish within ${secs} s`;
    const raise = stalled ? 'raise --boot-stall' : 'raise --boot-timeout';
    // A unit the console said failed, when the probe could not say more.
    const consoleFailure = seen.words.find((w) => !w.final && w.unit && !w.code.startsWith('default-target-'));
    if (snap) {
      const running = snap.jobs.filter((j) => j.state === 'running');
      const waiting = snap.jobs.filter((j) => j.state !== 'running');
      const list = (js: PendingJob[]) => js.map((j) => `${j.unit} (${j.type})`).join(', ');
      const parts = [running.length ? `still running: ${list(running)}` : '', waiting.length ? `waiting: ${list(waiting)}` : '']
        .filter(Boolean)
        .join('; ');
      const mode = snap.state === 'maintenance' ? ' (the system fell into emergency mode)' : '';
      findings.push({
        code: 'boot-timeout',
        ...(running[0] ?? snap.jobs[0] ? { path: (running[0] ?? snap.jobs[0]).unit } : {}),
        message: `${within}${mode}; ${parts || 'no jobs pending'}; ${raise} or fix the unit that never finishes starting`,
        actual: snap.jobs.map((j) => ({ unit: j.unit, type: j.type, state: j.state, journal: j.journal })),
      });
      addFailed(snap.failed);
      details.pendingJobs = snap.jobs.map((j) => `${j.unit} ${j.type} ${j.state}`);
      details.state = snap.state;
    } else {
      if (consoleFailure) {
        findings.push({
          code: 'unit-failed',
          path: consoleFailure.unit,
          message: `${consoleFailure.unit} failed and the boot did not finish: the console said ${said([consoleFailure])}; fix that unit, or allow it with --allow-failed-unit`,
          actual: seen.words.filter((w) => !w.final).map((w) => w.line),
        });
      }
      findings.push({
        code: 'boot-timeout',
        message: `${within} and the jobs probe printed nothing (does the image have /bin/sh and systemctl?); last output: ${outputTail(text, 1)[0] ?? '(none)'}`,
        actual: outputTail(text, 20),
      });
    }
  } else {
    findings.push({
      code: 'boot-failed',
      message: `the container exited (status ${out.exitCode}) before the boot probe reported; last output: ${outputTail(text, 1)[0] ?? '(none)'}`,
      actual: outputTail(text, 30),
    });
    addFailed(probe.lastJobs?.failed ?? []);
  }
  if (allowed.length) details.allowedFailedUnits = allowed;
  if (watched?.stoppedBy) details.stoppedBy = watched.stoppedBy;
  if (seen.words.length) details.consoleWords = seen.words.map((w) => w.line);
  if (findings.length) details.consoleTail = outputTail(text, 40).filter((l) => !l.includes(PROBE_MARK));
  return { findings, details };
}
