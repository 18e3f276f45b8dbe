// The portable check as a shell job (POSIX sh, run as root on the host or in
// the VM), and the reading of its progress marks. Pure.
//
// The job, per image:
// 1. on the host, copy the image to /var/tmp/NAME (NAME: the image's final
//    file name, whose prefix up to "_" selects the units), leaving alone a
//    file of that name that is already there. In the VM the image is
//    attached where it is: the host puts it on the job disk under its name.
//    (Not a block device: portabled attaches a disk bind-mounted onto that
//    name, but systemd 252 then fails every unit of it with "Failed to set
//    up mount namespacing: Operation not permitted"; a symlink to the disk
//    makes portabled name the image after the device instead);
// 2. `portablectl inspect`, then `portablectl attach --runtime`, with
//    --no-reload when no unit of that name is known to the system yet: then
//    systemd loads the attached units when they are first started, and the
//    job spares a daemon-reload (seconds under TCG);
// 3. start every matching unit that can be started (not templates), then poll
//    the started units with one `systemctl show` a round until each is out of
//    its transition and, when active, has been active for SETTLE_SECONDS (so
//    that a service that dies at once is seen dead, counted from when its
//    main process runs its program, not from the fork: a RootImage= setup
//    in between takes seconds under TCG; a service active/exited has
//    finished and cannot die any more); the last round's states
//    are the result, with each unit's journal;
// 4. with `detach` (the host, or when detaching is what is checked): stop
//    the units and detach. A VM that is thrown away afterwards skips it.
//
// Every step the job takes is a builtin but the tools it runs: it reads its
// values with `read`, waits with `sleep` only between polls, and forks no
// `cat` or command substitution (each fork costs milliseconds under TCG).
import { InternalError } from '../errors.js';
import { checkPortableName, isValidUnitName } from './portable-lint.js';

export interface PortableImage {
  /** Host path of the raw image. */
  path: string;
  /** File name portabled gets, e.g. "demo_1.0.raw". */
  name: string;
  /** Matching unit names, e.g. ["demo.service"]. */
  units: string[];
}

/** Where the job finds image i: `path` (named as portabled must see it), copied there first from `copyFrom` when given. */
export interface ImagePlace {
  path: string;
  copyFrom?: string;
}

const STARTABLE_TYPES = ['service', 'socket', 'timer', 'path', 'target'];
/** The job's exit code for "/var/tmp/NAME.raw is already there, and not ours". */
export const IN_THE_WAY = 125;
/** Prefix of the job's progress marks on the VM console. */
export const PROGRESS_MARK = 'PART-IMAGE-PORTABLE';
/** How long a started unit that is active must stay active before its state is read. */
export const SETTLE_SECONDS = 1;
/** The longest the job polls for the started units to settle. */
const SETTLE_LIMIT_S = 30;
/** The shortest wait between two polls, in 1/100 s. */
const POLL_CS = 5;
export const UNIT_START_TIMEOUT_S = 90;
const PROPS = ['Id', 'LoadState', 'ActiveState', 'SubState', 'Result', 'Type', 'ExecMainCode', 'ExecMainStatus', 'ActiveEnterTimestampMonotonic', 'MainPID'];
/** Where systemd finds unit files that a portable unit of the same name would clash with (a loaded unit is not reloaded by --no-reload). */
export const UNIT_DIRS = [
  '/etc/systemd/system', '/run/systemd/system', '/run/systemd/transient', '/run/systemd/generator.early', '/run/systemd/generator',
  '/run/systemd/generator.late', '/usr/local/lib/systemd/system', '/usr/lib/systemd/system', '/lib/systemd/system',
  '/etc/systemd/system.attached', '/run/systemd/system.attached',
];

export function isStartable(unit: string): boolean {
  const type = unit.slice(unit.lastIndexOf('.') + 1);
  return STARTABLE_TYPES.includes(type) && !/@\.[a-z]+$/.test(unit);
}

/** A job: a fixed script, and the values it works on as data files (name -> content). */
export interface PortableJob {
  script: string;
  data: Record<string, string>;
}

export interface PortableJobOptions {
  /** A /dev node that also receives the progress marks (the VM console). */
  console?: string;
  /** Stop the units and detach at the end (default true). */
  detach?: boolean;
}

/**
 * The shell job that checks `images`, image i at `places[i]`. No string from
 * the user or the image is ever part of the script: image names, paths and
 * unit names are data files (`i0.path`, `i0.from`, `i0.u1`, ...) that the
 * script reads from $PI_DATA (the host) or $PI_JOB/files (the VM) into
 * variables, always used inside double quotes. Results go to files in
 * $PI_OUT named i<N>.*. Before each step the job appends a mark ("i0 copy",
 * "i0 u1 start", "settle", ..., "end") to $PI_OUT/progress and, with
 * `console`, writes it to that device too ("PART-IMAGE-PORTABLE i0 u1
 * start"): if time runs out, the last mark says where. Pure.
 */
export function buildPortableJob(images: readonly PortableImage[], places: readonly ImagePlace[], opts: PortableJobOptions = {}): PortableJob {
  if (places.length !== images.length) throw new InternalError(`portable job: ${images.length} images but ${places.length} places`);
  if (new Set(images.map((i) => i.name)).size !== images.length) throw new InternalError('portable job: two images of one name; portabled tells images apart by name');
  const data: Record<string, string> = {};
  images.forEach((img, i) => {
    checkPortableName(img.name);
    data[`i${i}.path`] = places[i].path;
    if (places[i].copyFrom !== undefined) data[`i${i}.from`] = places[i].copyFrom!;
    img.units.forEach((u, j) => {
      if (!isValidUnitName(u)) throw new InternalError(`portable job: "${u}" is not a valid unit name; portable-lint should have left it out`);
      data[`i${i}.u${j}`] = u;
    });
  });
  for (const [name, value] of Object.entries(data)) {
    if (/[\n\0]/.test(value)) throw new InternalError(`portable job: the value of ${name} has a newline or NUL`);
  }
  const consoleDev = opts.console ?? '';
  if (!/^(\/dev\/[a-z0-9]+)?$/.test(consoleDev)) throw new InternalError(`portable job: console must be a /dev node, not ${consoleDev}`);
  const detach = opts.detach ?? true;
  const settleCs = SETTLE_SECONDS * 100;
  const lines = [
    'export SYSTEMD_PAGER= SYSTEMD_COLORS=0 LC_ALL=C',
    'set -f',
    'O="$PI_OUT"',
    'D="${PI_DATA:-$PI_JOB/files}"',
    'PCTL="portablectl --no-pager --no-legend --no-ask-password"',
    `C=${consoleDev}`,
    `mark() { echo "$*" >> "$O/progress"; if [ -n "$C" ]; then echo "${PROGRESS_MARK} $*" 2>/dev/null > "$C" || :; fi; }`,
    // R: the value of data file $1.
    'v() { R=; IFS= read -r R < "$D/$1" || :; }',
    // The uptime in 1/100 s: the kernel prints it with two decimals.
    'now() { read -r up _ < /proc/uptime; up=${up%.*}${up#*.}; }',
    // A unit the system has a file of: systemd may have loaded it, so an attach must reload.
    `known() { t=$1; case "$t" in *@?*.*) t="\${t%%@*}@.\${t##*.}" ;; esac; for d in ${UNIT_DIRS.join(' ')}; do [ -e "$d/$1" ] || [ -e "$d/$t" ] && return 0; done; return 1; }`,
    // The started units' states, one `systemctl show` for all: $O/show; ok=1 when all have settled, w the wait in 1/100 s before the next poll.
    'poll() {',
    `  systemctl show ${PROPS.map((p) => `-p ${p}`).join(' ')} "$@" > "$O/show" 2> "$O/show.err"`,
    '  now; ok=1; w=0; st=; ss=; t=0; mp=0; b=0',
    '  while IFS== read -r k val; do',
    `    case "$k" in ActiveState) st=$val ;; SubState) ss=$val ;; ActiveEnterTimestampMonotonic) t=$val ;; MainPID) mp=$val ;; '') judge ;; esac`,
    '  done < "$O/show"',
    '  judge',
    // At least POLL_CS, at most the settle time and what is left of the limit: a clock that disagrees with systemd's cannot make it sleep long.
    `  [ $w -lt ${POLL_CS} ] && w=${POLL_CS}`,
    `  [ $w -gt ${settleCs} ] && w=${settleCs}`,
    '  [ $w -gt $((lim - up)) ] && w=$((lim - up))',
    `  [ $w -lt 1 ] && w=1`,
    '}',
    'judge() {',
    // A service that is active/exited has run its course (a oneshot with RemainAfterExit=): nothing of it can die now.
    // A main process whose name is still "(NAME)" has not run its program yet (systemd sets up the
    // namespace, a RootImage= mount, between fork and exec: seconds under TCG). The settle time of a
    // unit seen so counts from the first poll that found the program running (S<block>).
    '  c=; [ "$mp" -gt 0 ] 2>/dev/null && { IFS= read -r c < /proc/$mp/comm; } 2>/dev/null',
    '  from=$((t / 10000))',
    '  case "$st.$ss.$c" in',
    '    active.exited.*) from= ;;',
    `    active.*.\\(*) eval "S$b=-1"; from=$((up + ${settleCs})) ;;`,
    '    active.*) eval "s0=\\${S$b:-0}"; if [ "$s0" = -1 ]; then eval "S$b=$up"; s0=$up; fi; [ "$s0" -gt "$from" ] && from=$s0 ;;',
    '  esac',
    `  case "$st" in activating|deactivating|reloading|refreshing) ok=0; r=${POLL_CS} ;; active) r=$(( \${from:-0} + ${settleCs} - up )); [ -z "$from" ] && r=0 ;; *) r=0 ;; esac`,
    '  if [ $r -gt 0 ]; then ok=0; if [ $w = 0 ] || [ $r -lt $w ]; then w=$r; fi; fi',
    '  st=; ss=; t=0; mp=0; b=$((b + 1))',
    '}',
    // $O/show cut into one file per started unit (K: their i<N>.u<M> keys, in the order shown).
    'split_show() {',
    '  set -- $K; : > "$O/$1.show"',
    '  while IFS= read -r l; do',
    '    if [ -z "$l" ]; then [ $# -gt 0 ] && shift; [ $# -gt 0 ] && : > "$O/$1.show"; continue; fi',
    `    [ $# -gt 0 ] && printf '%s\\n' "$l" >> "$O/$1.show"`,
    '  done < "$O/show"',
    '}',
    'K=',
    'set --',
  ];
  const u = (i: number, j: number) => `"$U${i}_${j}"`;
  images.forEach((img, i) => {
    const copy = places[i].copyFrom !== undefined;
    lines.push(`v i${i}.path; P${i}=$R`);
    img.units.forEach((_u, j) => lines.push(`v i${i}.u${j}; U${i}_${j}=$R`));
    if (copy) {
      lines.push(
        `mark i${i} copy`,
        `v i${i}.from`,
        `if [ -e "$P${i}" ]; then echo "$P${i} already exists: another image of that name is in the way" > "$O/i${i}.attach"; echo ${IN_THE_WAY} > "$O/i${i}.attach.rc"; A${i}=${IN_THE_WAY}`,
        `elif ! cp --sparse=always "$R" "$P${i}" > "$O/i${i}.attach" 2>&1; then echo 126 > "$O/i${i}.attach.rc"; A${i}=126`,
        'else',
      );
    } else {
      lines.push('if :; then');
    }
    lines.push(
      `  mark i${i} attach`,
      `  $PCTL inspect "$P${i}" > "$O/i${i}.inspect" 2>&1`,
      '  nr=--no-reload',
      ...img.units.map((_u, j) => `  known ${u(i, j)} && nr=`),
      `  $PCTL attach --runtime $nr "$P${i}" > "$O/i${i}.attach" 2>&1; A${i}=$?; echo $A${i} > "$O/i${i}.attach.rc"`,
      'fi',
    );
  });
  images.forEach((img, i) => {
    const startable = img.units.map((un, j) => (isStartable(un) ? j : -1)).filter((j) => j >= 0);
    if (!startable.length) return;
    lines.push(`if [ "$A${i}" = 0 ]; then`);
    for (const j of startable) {
      lines.push(
        `  mark i${i} u${j} start`,
        `  timeout ${UNIT_START_TIMEOUT_S} systemctl start ${u(i, j)} > "$O/i${i}.u${j}.start" 2>&1; echo $? > "$O/i${i}.u${j}.start.rc"`,
        `  K="$K i${i}.u${j}"; set -- "$@" ${u(i, j)}`,
      );
    }
    lines.push('fi');
  });
  lines.push(
    'mark settle',
    'if [ $# -gt 0 ]; then',
    `  now; lim=$((up + ${SETTLE_LIMIT_S * 100}))`,
    '  while poll "$@"; [ $ok = 0 ] && [ $up -lt $lim ]; do sleep $((w / 100)).$((w / 10 % 10))$((w % 10)); done',
    '  split_show',
    'fi',
  );
  images.forEach((img, i) => {
    const copy = places[i].copyFrom !== undefined;
    const startable = img.units.map((un, j) => (isStartable(un) ? u(i, j) : '')).filter(Boolean);
    lines.push(`if [ "$A${i}" = 0 ]; then`, `  mark i${i} show`);
    img.units.forEach((un, j) => {
      if (!isStartable(un)) return;
      lines.push(`  journalctl -b -u ${u(i, j)} --no-pager --no-hostname -o short-monotonic -n 50 > "$O/i${i}.u${j}.journal" 2>&1`);
    });
    if (detach) {
      if (startable.length) lines.push(`  mark i${i} stop`, `  timeout ${UNIT_START_TIMEOUT_S} systemctl stop ${startable.join(' ')} > "$O/i${i}.stop" 2>&1`);
      lines.push(
        `  mark i${i} detach`,
        `  $PCTL detach --runtime "$P${i}" > "$O/i${i}.detach" 2>&1; echo $? > "$O/i${i}.detach.rc"`,
      );
      if (copy) lines.push(`  rm -f "$P${i}"`);
    }
    if (copy) lines.push(`elif [ "$A${i}" != ${IN_THE_WAY} ]; then`, `  rm -f "$P${i}"`);
    lines.push('fi');
  });
  lines.push('mark end');
  return { script: `${lines.join('\n')}\n`, data };
}

/** The job's progress marks, oldest first: from its progress file, or (with `fromConsole`) from console text. Pure. */
export function parseProgress(text: string, fromConsole = false): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r/g, '').trim();
    if (!fromConsole) {
      if (line) out.push(line);
      continue;
    }
    const at = line.indexOf(`${PROGRESS_MARK} `);
    if (at >= 0) out.push(line.slice(at + PROGRESS_MARK.length + 1).trim());
  }
  return out;
}

export type PortableStep = 'copy' | 'attach' | 'start' | 'settle' | 'show' | 'stop' | 'detach' | 'end' | 'unknown';

/** Where a job that ran out of time was: the step of its last mark. */
export interface PortableHang {
  step: PortableStep;
  /** Index of the image it was at. */
  image?: number;
  /** For `start`: the unit being started; for `stop`: the units being stopped. */
  units: string[];
}

/** The step the job was in when it stopped: its last progress mark. Pure. */
export function whereJobStopped(progress: readonly string[], images: readonly PortableImage[]): PortableHang {
  const last = progress.at(-1);
  const m = last === undefined ? null : /^(?:i(\d+) )?(?:u(\d+) )?([a-z]+)$/.exec(last);
  if (!m) return { step: 'unknown', units: [] };
  const image = m[1] === undefined ? undefined : Number(m[1]);
  const img = image === undefined ? undefined : images[image];
  const step = m[3] as PortableStep;
  if (!['copy', 'attach', 'start', 'settle', 'show', 'stop', 'detach', 'end'].includes(step)) return { step: 'unknown', units: [] };
  if (step === 'start' && img && m[2] !== undefined) {
    const unit = img.units[Number(m[2])];
    return { step, image, units: unit ? [unit] : [] };
  }
  if (step === 'stop' && img) return { step, image, units: img.units.filter(isStartable) };
  return { step, image, units: [] };
}

export const STEP_WORDS: Record<PortableStep, string> = {
  copy: 'copying the image to /var/tmp',
  attach: 'portablectl inspect/attach',
  start: 'starting a unit',
  settle: 'waiting for the started units to settle',
  show: "reading the units' states and journals",
  stop: 'stopping the units',
  detach: 'portablectl detach',
  end: 'the end of the job',
  unknown: 'an unknown step (the job left no progress mark)',
};

/** The phase a progress line shows for the job's last mark ("starting demo.service"). Pure. */
export function phaseWords(progress: readonly string[], images: readonly PortableImage[]): string | undefined {
  const at = whereJobStopped(progress, images);
  const img = at.image === undefined ? undefined : images[at.image];
  switch (at.step) {
    case 'copy':
      return img && `copying ${img.name} to /var/tmp`;
    case 'attach':
      return img && `attaching ${img.name}`;
    case 'start':
      return `starting ${at.units[0] ?? 'a unit'}`;
    case 'stop':
      return `stopping ${at.units.join(' ')}`;
    case 'detach':
      return img && `detaching ${img.name}`;
    case 'unknown':
      return undefined;
    default:
      return STEP_WORDS[at.step];
  }
}
