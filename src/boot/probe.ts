// The boot probe of the nspawn stage, and its judge: the unit files and
// scripts bound into a booting container, the parser of what they print
// (PART-IMAGE-PROBE lines), and the verdict on a boot. Pure but for
// writeProbe(); wherever the boot runs (host or VM), the same code judges it.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isNspawnNoise } from '../tools/nspawn.js';
import { ANSI, consoleTail } from './console.js';
import type { Finding } from '../types.js';
import { resolvePath, type Lookup } from './resolve.js';

export const PROBE_MARK = 'PART-IMAGE-PROBE';
const PROBE_DIR = '/run/part-image-probe';
const PROBE_UNIT = 'part-image-probe.service';
const JOBS_UNIT = 'part-image-jobs.service';
const JOBS_TIMER = 'part-image-jobs.timer';

/** Where nspawn -b looks for init, in its order. */
export const NSPAWN_INIT_PATHS = ['/usr/lib/systemd/systemd', '/lib/systemd/systemd', '/sbin/init'];

/** True when booting the tree with -b would start systemd. */
export function hasSystemdInit(lookup: Lookup): boolean {
  for (const p of NSPAWN_INIT_PATHS) {
    const r = resolvePath(lookup, p);
    if (!r.ok) continue;
    if (r.entry.type !== 'file') continue;
    return r.path.split('/').pop() === 'systemd';
  }
  return false;
}

// ---- probe files --------------------------------------------------------

const LIB_SH = `# part-image probe library (sourced)
M=${PROBE_MARK}
export SYSTEMD_PAGER= SYSTEMD_COLORS=0 LC_ALL=C
journal() {
  journalctl -q -u "$1" -n 10 --no-pager -o short 2>&1 | while IFS= read -r l; do echo "$M journal unit=$1 | $l"; done
}
report_failed() {
  systemctl list-units --state=failed --plain --no-legend --no-pager 2>/dev/null | while read -r u rest; do
    case "$u" in ""|*" "*) continue ;; esac
    echo "$M failed unit=$u result=$(systemctl show -p Result --value "$u" 2>&1) status=$(systemctl show -p ExecMainStatus --value "$u" 2>&1)"
    journal "$u"
  done
}
`;

// The report is printed in one write, as jobs.sh prints its snapshots: a
// snapshot that lands while the probe gathers (a slow boot, where both run)
// then comes before or after the report, never inside it.
const PROBE_SH = `. ${PROBE_DIR}/lib.sh
out=$(
  echo "$M begin"
  echo "$M state=$(systemctl is-system-running 2>&1)"
  d=$(systemctl get-default 2>&1)
  echo "$M default-target=$d active=$(systemctl is-active "$d" 2>&1)"
  report_failed
  echo "$M end"
)
printf '%s\\n' "$out" 2>/dev/null > ${PROBE_DIR}/report
printf '%s\\n' "$out"
systemctl --no-block poweroff
`;

/** jobs.sh: every second; prints once the boot is late (LATE seconds), or at once in emergency mode (then powers off). */
function jobsScript(lateSec: number): string {
  return `. ${PROBE_DIR}/lib.sh
s=$(systemctl is-system-running 2>&1)
case "$s" in running|degraded|stopping) exit 0 ;; esac
now=$(date +%s 2>/dev/null) || now=
[ -s /run/part-image-jobs.start ] || echo "$now" > /run/part-image-jobs.start
start=$(cat /run/part-image-jobs.start)
if [ "$s" != maintenance ] && [ -n "$now" ] && [ -n "$start" ] && [ $((now - start)) -lt ${lateSec} ]; then exit 0; fi
out=$(
  echo "$M jobs-begin state=$s"
  systemctl list-jobs --no-legend --plain --no-pager 2>/dev/null | while read -r id unit type st rest; do
    case "$id" in ""|*[!0-9]*) continue ;; esac
    case "$unit" in ${JOBS_UNIT}) continue ;; esac
    echo "$M job id=$id unit=$unit type=$type state=$st"
    [ "$st" = running ] && journal "$unit"
  done
  report_failed
  echo "$M jobs-end"
)
if [ "$out" != "$(cat /run/part-image-jobs.last 2>/dev/null)" ]; then
  printf '%s\\n' "$out" > /run/part-image-jobs.last
  printf '%s\\n' "$out"
fi
if [ "$s" = maintenance ]; then
  echo "$M emergency"
  systemctl --no-block poweroff
fi
`;
}

const CONSOLE = `StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
`;

const PROBE_SERVICE = `[Unit]
Description=part-image boot probe
After=default.target multi-user.target

[Service]
Type=oneshot
${CONSOLE}ExecStart=/bin/sh ${PROBE_DIR}/probe.sh
`;

const JOBS_SERVICE = `[Unit]
Description=part-image pending-jobs probe
DefaultDependencies=no
IgnoreOnIsolate=yes
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
${CONSOLE}ExecStart=/bin/sh ${PROBE_DIR}/jobs.sh
`;

const JOBS_TIMER_UNIT = `[Unit]
Description=part-image pending-jobs probe timer
DefaultDependencies=no
IgnoreOnIsolate=yes
Conflicts=shutdown.target
Before=shutdown.target

[Timer]
OnActiveSec=1s
OnUnitInactiveSec=1s
AccuracySec=50ms
`;

/** Write the probe files to `dir`; returns the binds and init arguments that activate them. */
export async function writeProbe(dir: string, bootTimeoutMs: number) {
  const lateSec = Math.max(1, Math.floor(bootTimeoutMs / 2000));
  await writeFile(join(dir, 'lib.sh'), LIB_SH);
  await writeFile(join(dir, 'probe.sh'), PROBE_SH);
  await writeFile(join(dir, 'jobs.sh'), jobsScript(lateSec));
  await writeFile(join(dir, PROBE_UNIT), PROBE_SERVICE);
  await writeFile(join(dir, JOBS_UNIT), JOBS_SERVICE);
  await writeFile(join(dir, JOBS_TIMER), JOBS_TIMER_UNIT);
  return {
    bindRo: [
      { host: dir, container: PROBE_DIR },
      ...[PROBE_UNIT, JOBS_UNIT, JOBS_TIMER].map((u) => ({ host: join(dir, u), container: `/etc/systemd/system/${u}` })),
    ],
    initArgs: [`systemd.wants=${PROBE_UNIT}`, `systemd.wants=${JOBS_TIMER}`],
  };
}

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
  opts: { bootTimeoutMs: number; allowFailedUnits: readonly string[] },
): { findings: Finding[]; details: Record<string, unknown> } {
  const text = `${out.stdout}\n${out.stderr}`;
  const probe = parseProbeOutput(text);
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
  } else if (out.timedOut) {
    const snap = probe.lastJobs && { ...probe.lastJobs, jobs: probe.lastJobs.jobs.filter((j) => !j.unit.startsWith('part-image-')) };
    const secs = Math.round(opts.bootTimeoutMs / 1000);
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
        message: `the boot did not finish within ${secs} s${mode}; ${parts || 'no jobs pending'}; raise --boot-timeout or fix the unit that never finishes starting`,
        actual: snap.jobs.map((j) => ({ unit: j.unit, type: j.type, state: j.state, journal: j.journal })),
      });
      addFailed(snap.failed);
      details.pendingJobs = snap.jobs.map((j) => `${j.unit} ${j.type} ${j.state}`);
      details.state = snap.state;
    } else {
      findings.push({
        code: 'boot-timeout',
        message: `the boot did not finish within ${secs} s and the jobs probe printed nothing (does the image have /bin/sh and systemctl?); last output: ${outputTail(text, 1)[0] ?? '(none)'}`,
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
  if (findings.length) details.consoleTail = outputTail(text, 40).filter((l) => !l.includes(PROBE_MARK));
  return { findings, details };
}
