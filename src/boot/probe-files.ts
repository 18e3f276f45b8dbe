// The files of the nspawn stage's boot probe: the unit files and scripts
// bound into a booting container, and what activates them. What they print
// (PART-IMAGE-PROBE lines) is parsed and judged in probe.ts.
//
// Two channels:
// - part-image-probe.service (After=default.target, wanted on the init command
//   line) prints the system state, the default target's state and every
//   failed unit with its last journal lines, then powers off;
// - part-image-jobs.timer fires part-image-jobs.service every second, outside
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

/** jobs.sh: every second; a progress line when the jobs change; the snapshot once the boot is late (LATE seconds), or at once in emergency mode (then powers off). */
function jobsScript(lateSec: number): string {
  return `. ${PROBE_DIR}/lib.sh
s=$(systemctl is-system-running 2>&1)
case "$s" in running|degraded|stopping) exit 0 ;; esac
# Progress: one line whenever the pending jobs change, so that the stage can
# tell a slow boot from a stalled one (boot-watch.ts).
jobs=$(systemctl list-jobs --no-legend --plain --no-pager 2>/dev/null | grep -v '${JOBS_UNIT}')
if [ "$jobs" != "$(cat /run/part-image-jobs.prog 2>/dev/null)" ]; then
  printf '%s\n' "$jobs" > /run/part-image-jobs.prog
  echo "$M progress jobs=$(printf '%s\n' "$jobs" | grep -c .)"
fi
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

/**
 * Write the probe files to `dir`; returns the binds and init arguments that
 * activate them. The jobs snapshots start at half of `limitMs` (the stall
 * limit, or the boot timeout), so that one is there when the limit is hit.
 */
export async function writeProbe(dir: string, limitMs: number) {
  const lateSec = Math.max(1, Math.floor(limitMs / 2000));
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
