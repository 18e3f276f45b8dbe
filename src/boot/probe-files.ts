// The files of the nspawn stage's boot probe: the unit files and scripts
// bound into a booting container, and what activates them. What they print
// (PART-IMAGE-PROBE lines) is parsed and judged in probe.ts.
//
// Two channels:
// - part-image-probe.service (After=default.target, wanted on the init command
//   line) prints the system state, the default target's state and every
//   failed unit with its last journal lines, then powers off at once;
// - part-image-jobs.timer fires part-image-jobs.service every 1-3 s, outside
//   the boot transaction; once the boot is late it prints the pending jobs,
//   and in emergency mode it reports at once and powers off.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
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
/** probe.sh; with `forceOff` it powers the container off at once, for a run that also reads the report file. */
const probeScript = (forceOff: boolean) => `. ${PROBE_DIR}/lib.sh
# Two programs for the state of the system and of its default target (in the
# part-image VM each program started costs a tenth of a second or more); the
# failed units only when there are any.
systemctl show -p SystemState -p NFailedUnits > /run/part-image-probe.manager 2>&1
systemctl show -p Id -p ActiveState default.target > /run/part-image-probe.default 2>&1
s=; nf=; d=; a=
while IFS== read -r k v; do case "$k" in SystemState) s=$v ;; NFailedUnits) nf=$v ;; esac; done < /run/part-image-probe.manager
while IFS== read -r k v; do case "$k" in Id) d=$v ;; ActiveState) a=$v ;; esac; done < /run/part-image-probe.default
[ -n "$s" ] || s=$(systemctl is-system-running 2>&1)
[ -n "$d" ] || d=$(systemctl get-default 2>&1)
[ -n "$a" ] || a=$(systemctl is-active "$d" 2>&1)
out=$(
  echo "$M begin"
  echo "$M state=$s"
  echo "$M default-target=$d active=$a"
  [ "$nf" = 0 ] || report_failed
  echo "$M end"
)
printf '%s\\n' "$out" 2>/dev/null > ${PROBE_DIR}/report
printf '%s\\n' "$out"
${
  forceOff
    ? `# Off at once, with no orderly shutdown (seconds in the part-image VM): the
# report is in its file, and the root is a volatile overlay that keeps nothing.
systemctl --force --force poweroff`
    : // The console is the only channel here: an orderly poweroff lets nspawn copy all of it.
      'systemctl --no-block poweroff'
}
`;

/**
 * jobs.sh: every round (jobsEverySec); a progress line when the jobs change; the snapshot
 * once the boot is late (LATE seconds), or at once in emergency mode (then
 * powers off). A round starts one program while jobs are pending (systemctl
 * list-jobs) and two once none are (systemctl is-system-running), and reads
 * the rest with shell builtins: in the part-image VM (TCG) every program
 * started costs 0.05-0.2 s of CPU that the booting container needs.
 */
function jobsScript(lateSec: number): string {
  return `. ${PROBE_DIR}/lib.sh
R=/run/part-image-jobs
systemctl list-jobs --no-legend --plain --no-pager > $R.now 2>/dev/null
# The pending jobs but this one, and how many.
cur=; n=0
while IFS= read -r l; do
  case "$l" in ''|*${JOBS_UNIT}*) continue ;; esac
  cur="$cur$l
"; n=$((n+1))
done < $R.now
if [ $n = 0 ]; then
  # Nothing pending: the boot is over (running, degraded), or it stopped in emergency mode.
  s=$(systemctl is-system-running 2>&1)
  case "$s" in maintenance) ;; *) exit 0 ;; esac
else
  s=starting
fi
# Progress: one line whenever the pending jobs change, so that the stage can
# tell a slow boot from a stalled one (boot-watch.ts).
prev=
[ -f $R.prog ] && while IFS= read -r l; do prev="$prev$l
"; done < $R.prog
if [ "$cur" != "$prev" ]; then
  printf '%s' "$cur" > $R.prog
  echo "$M progress jobs=$n"
fi
read -r now _ < /proc/uptime; now=\${now%.*}
[ -s $R.start ] || echo "$now" > $R.start
read -r start < $R.start
if [ "$s" != maintenance ] && [ -n "$start" ] && [ $((now - start)) -lt ${lateSec} ]; then exit 0; fi
out=$(
  echo "$M jobs-begin state=$s"
  while read -r id unit type st rest; do
    case "$id" in ""|*[!0-9]*) continue ;; esac
    case "$unit" in ${JOBS_UNIT}) continue ;; esac
    echo "$M job id=$id unit=$unit type=$type state=$st"
    [ "$st" = running ] && journal "$unit"
  done < $R.now
  report_failed
  echo "$M jobs-end"
)
last=
[ -f $R.last ] && while IFS= read -r l; do last="$last$l
"; done < $R.last
if [ "$out
" != "$last" ]; then
  printf '%s\\n' "$out" > $R.last
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

/**
 * The jobs timer: the first round a second into the boot, then one every
 * `everySec` after the last ended. Each round costs the booting system a
 * program or two (up to a second of CPU in the part-image VM).
 */
const jobsTimerUnit = (everySec: number) => `[Unit]
Description=part-image pending-jobs probe timer
DefaultDependencies=no
IgnoreOnIsolate=yes
Conflicts=shutdown.target
Before=shutdown.target

[Timer]
OnActiveSec=1s
OnUnitInactiveSec=${everySec}s
AccuracySec=50ms
`;

/** Seconds between two rounds of the jobs probe: a tenth of the stall limit, 1-3 s, so that a stall is told from progress many times over. Pure. */
export function jobsEverySec(limitMs: number): number {
  return Math.max(1, Math.min(3, Math.floor(limitMs / 10_000)));
}

/**
 * Write the probe files to `dir`; returns the binds and init arguments that
 * activate them. The jobs snapshots start at half of `limitMs` (the stall
 * limit, or the boot timeout), so that one is there when the limit is hit;
 * the rounds come every jobsEverySec(limitMs). `forceOff`: the run reads
 * the report file the probe leaves in `dir` (bound writable), so the probe
 * may power off at once instead of shutting down in order.
 */
export async function writeProbe(dir: string, limitMs: number, o: { forceOff?: boolean } = {}) {
  const lateSec = Math.max(1, Math.floor(limitMs / 2000));
  await writeFile(join(dir, 'lib.sh'), LIB_SH);
  await writeFile(join(dir, 'probe.sh'), probeScript(o.forceOff ?? false));
  await writeFile(join(dir, 'jobs.sh'), jobsScript(lateSec));
  await writeFile(join(dir, PROBE_UNIT), PROBE_SERVICE);
  await writeFile(join(dir, JOBS_UNIT), JOBS_SERVICE);
  await writeFile(join(dir, JOBS_TIMER), jobsTimerUnit(jobsEverySec(limitMs)));
  return {
    bindRo: [
      { host: dir, container: PROBE_DIR },
      ...[PROBE_UNIT, JOBS_UNIT, JOBS_TIMER].map((u) => ({ host: join(dir, u), container: `/etc/systemd/system/${u}` })),
    ],
    initArgs: [`systemd.wants=${PROBE_UNIT}`, `systemd.wants=${JOBS_TIMER}`],
  };
}
