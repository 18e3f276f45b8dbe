// The portable check as a shell job (POSIX sh, run as root on the host or in
// the VM), and the reading of its progress marks. Pure.
//
// The job, per image:
// 1. copy the image to /var/tmp/NAME.raw (NAME: the image's final file name,
//    whose prefix up to "_" selects the units), and `portablectl inspect` it.
//    A copy, not the disk itself: portabled attaches a block device bind-
//    mounted onto that name, but systemd 252 then fails every unit of it
//    with "Failed to set up mount namespacing: Operation not permitted"
//    (tried in the VM, read-only and writable); a symlink to the disk makes
//    portabled name the image after the device (vdb) instead;
// 2. `portablectl attach --runtime`;
// 3. start every matching unit that can be started (not templates), then poll
//    until each started unit is out of its transition and, when active, has
//    been active for SETTLE_SECONDS (so that a service that dies at once is
//    seen dead), and read each unit's state and journal;
// 4. with `detach` (the host, or when detaching is what is checked): stop
//    the units and detach. A VM that is thrown away afterwards skips it.
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

const STARTABLE_TYPES = ['service', 'socket', 'timer', 'path', 'target'];
/** The job's exit code for "/var/tmp/NAME.raw is already there, and not ours". */
export const IN_THE_WAY = 125;
/** Prefix of the job's progress marks on the VM console. */
export const PROGRESS_MARK = 'PART-IMAGE-PORTABLE';
/** How long a started unit that is active must stay active before its state is read. */
export const SETTLE_SECONDS = 1;
/** The longest the job polls for the started units to settle. */
const SETTLE_LIMIT_S = 30;
export const UNIT_START_TIMEOUT_S = 90;
const PROPS = ['Id', 'LoadState', 'ActiveState', 'SubState', 'Result', 'Type', 'ExecMainCode', 'ExecMainStatus'];

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
 * The shell job that checks `images`; `sources[i]` is where image i can be
 * read (a host file, or the VM's disk). No string from the user or the image
 * is ever part of the script: image names, sources and unit names are data
 * files (`i0.name`, `i0.src`, `i0.u1`, ...) that the script reads from
 * $PI_DATA (the host) or $PI_JOB/files (the VM), always inside double
 * quotes. Results go to files in $PI_OUT named i<N>.*. Before each step the
 * job appends a mark ("i0 copy", "i0 u1 start", "settle", ..., "end") to
 * $PI_OUT/progress and, with `console`, writes it to that device too
 * ("PART-IMAGE-PORTABLE i0 u1 start"): if time runs out, the last mark says
 * where. Pure.
 */
export function buildPortableJob(images: readonly PortableImage[], sources: readonly string[], opts: PortableJobOptions = {}): PortableJob {
  const data: Record<string, string> = {};
  images.forEach((img, i) => {
    checkPortableName(img.name);
    data[`i${i}.name`] = img.name;
    data[`i${i}.src`] = sources[i];
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
  const lines = [
    'export SYSTEMD_PAGER= SYSTEMD_COLORS=0 LC_ALL=C',
    'O="$PI_OUT"',
    'D="${PI_DATA:-$PI_JOB/files}"',
    'v() { cat "$D/$1"; }',
    'PCTL="portablectl --no-pager --no-legend --no-ask-password"',
    `C=${consoleDev}`,
    `mark() { echo "$*" >> "$O/progress"; if [ -n "$C" ]; then echo "${PROGRESS_MARK} $*" 2>/dev/null > "$C" || :; fi; }`,
    // Settled: out of its transition, and active for SETTLE_SECONDS when active (/proc/uptime in 1/100 s, systemd's stamp in µs).
    'settled() {',
    '  case "$(systemctl show -p ActiveState --value "$1" 2>/dev/null)" in activating|deactivating|reloading|refreshing) return 1 ;; active) ;; *) return 0 ;; esac',
    '  t=$(systemctl show -p ActiveEnterTimestampMonotonic --value "$1" 2>/dev/null)',
    "  up=$(cut -d ' ' -f 1 /proc/uptime | tr -d .)",
    `  [ -n "$t" ] && [ $((up * 10000 - t)) -ge ${SETTLE_SECONDS * 1_000_000} ]`,
    '}',
  ];
  const unit = (i: number, j: number) => `"$(v i${i}.u${j})"`;
  images.forEach((_img, i) => {
    lines.push(
      `mark i${i} copy`,
      `f="/var/tmp/$(v i${i}.name)"`,
      `if [ -e "$f" ]; then echo "$f already exists: another image of that name is in the way" > "$O/i${i}.attach"; echo ${IN_THE_WAY} > "$O/i${i}.attach.rc"`,
      `elif ! cp --sparse=always "$(v i${i}.src)" "$f" > "$O/i${i}.attach" 2>&1; then echo 126 > "$O/i${i}.attach.rc"`,
      'else',
      `  mark i${i} attach`,
      `  $PCTL inspect "$f" > "$O/i${i}.inspect" 2>&1`,
      `  $PCTL attach --runtime "$f" > "$O/i${i}.attach" 2>&1; echo $? > "$O/i${i}.attach.rc"`,
      `  $PCTL list > "$O/i${i}.list" 2>&1`,
      'fi',
    );
  });
  const started: string[] = [];
  images.forEach((img, i) => {
    lines.push(`if [ "$(cat "$O/i${i}.attach.rc")" = 0 ]; then`);
    img.units.forEach((u, j) => {
      if (!isStartable(u)) return;
      started.push(`[ ! -e "$O/i${i}.u${j}.start.rc" ] || settled ${unit(i, j)} || s=1`);
      lines.push(
        `  mark i${i} u${j} start`,
        `  timeout ${UNIT_START_TIMEOUT_S} systemctl start ${unit(i, j)} > "$O/i${i}.u${j}.start" 2>&1; echo $? > "$O/i${i}.u${j}.start.rc"`,
      );
    });
    lines.push('fi');
  });
  lines.push('mark settle', 'n=0', `while [ $n -lt ${SETTLE_LIMIT_S * 10} ]; do`, '  s=0', ...started.map((l) => `  ${l}`), '  [ $s = 0 ] && break', '  sleep 0.1; n=$((n+1))', 'done');
  images.forEach((img, i) => {
    const startable = img.units.map((u, j) => (isStartable(u) ? unit(i, j) : '')).filter(Boolean);
    lines.push(`if [ "$(cat "$O/i${i}.attach.rc")" = 0 ]; then`, `  mark i${i} show`);
    img.units.forEach((u, j) => {
      if (!isStartable(u)) return;
      lines.push(
        `  systemctl show ${PROPS.map((p) => `-p ${p}`).join(' ')} ${unit(i, j)} > "$O/i${i}.u${j}.show" 2>&1`,
        `  journalctl -b -u ${unit(i, j)} --no-pager --no-hostname -o short-monotonic -n 50 > "$O/i${i}.u${j}.journal" 2>&1`,
      );
    });
    if (detach) {
      if (startable.length) lines.push(`  mark i${i} stop`, `  timeout ${UNIT_START_TIMEOUT_S} systemctl stop ${startable.join(' ')} > "$O/i${i}.stop" 2>&1`);
      lines.push(
        `  mark i${i} detach`,
        `  $PCTL detach --runtime "/var/tmp/$(v i${i}.name)" > "$O/i${i}.detach" 2>&1; echo $? > "$O/i${i}.detach.rc"`,
        `  rm -f "/var/tmp/$(v i${i}.name)"`,
      );
    }
    lines.push(`elif [ "$(cat "$O/i${i}.attach.rc")" != ${IN_THE_WAY} ]; then`, `  rm -f "/var/tmp/$(v i${i}.name)"`, 'fi');
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
