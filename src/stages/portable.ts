// The portable stage: attach the image with portablectl and run its units.
//
// portablectl needs systemd-portabled, so systemd as PID 1. Where the host
// has it (and we are root), the check runs on the host; elsewhere it runs in
// the boot VM (src/vm/), which is the case in CI. Either way the same shell
// job does the work:
// 1. copy the image to /var/tmp/NAME.raw (NAME: the image's final file name,
//    whose prefix up to "_" selects the units), and `portablectl inspect` it;
// 2. `portablectl attach --runtime`;
// 3. start every matching unit that can be started (not templates), wait a
//    moment so that a service that dies at once is seen dead, and read each
//    unit's state and journal;
// 4. stop the units and detach.
// A service passes when it is active, or finished with exit status 0 (a
// oneshot); other unit types pass when active.
//
// Whose fault is what (portableOutcome):
// - the VM did not come up, or the check could not start (a /var/tmp/NAME.raw
//   that is not ours is in the way on the host): the environment's, the stage
//   is skipped (unavailable, exit 3) with what to do;
// - the check ran out of time: the job marks each step it begins (a progress
//   file, and in the VM the console too, which the host keeps even when it has
//   to kill the VM). Out of time while a unit of the image was starting or
//   stopping: a finding about the image (portable-service-timeout, naming the
//   unit). Out of time anywhere else (copying, attaching, reading states):
//   the environment's;
// - otherwise the units' states are judged (judgePortable).
//
// The job can take several images at once (one VM boot for all), see
// checkPortable().
import { access, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Finding } from '../types.js';
import type { Scope } from '../cleanup.js';
import { hasTool, run } from '../exec.js';
import { InternalError } from '../errors.js';
import { readImageManifest } from '../image/debugfs-reader.js';
import { consoleTail } from '../boot/console.js';
import { runVm, vmFailure, type VmResult } from '../vm/run.js';
import { checkPortableName, isValidUnitName, matchingUnits, portableNameProblem, portablePrefix } from './portable-lint.js';
import { passedOrFailed, skipped, type Stage, type StageContext, type StageOutcome } from './context.js';

export interface PortableImage {
  /** Host path of the raw image. */
  path: string;
  /** File name portabled gets, e.g. "demo_1.0.raw". */
  name: string;
  /** Matching unit names, e.g. ["demo.service"]. */
  units: string[];
}

export interface UnitCheck {
  unit: string;
  /** Templates and unknown types are not started. */
  started: boolean;
  startExit?: number;
  startOutput: string;
  props: Record<string, string>;
  journal: string[];
}

export interface PortableCheck {
  name: string;
  /** undefined: the job never got to the attach. */
  attachExit?: number;
  attachOutput: string;
  inspect: string;
  /** portablectl list after the attach. */
  list: string;
  units: UnitCheck[];
  detachExit?: number;
  detachOutput: string;
}

const STARTABLE_TYPES = ['service', 'socket', 'timer', 'path', 'target'];
/** The job's exit code for "/var/tmp/NAME.raw is already there, and not ours". */
export const IN_THE_WAY = 125;
/** Prefix of the job's progress marks on the VM console. */
export const PROGRESS_MARK = 'PART-IMAGE-PORTABLE';
/** How long started units get to fail before their state is read. */
export const SETTLE_SECONDS = 3;
const UNIT_START_TIMEOUT_S = 90;
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

/**
 * The shell job (POSIX sh, run as root) that checks `images`; `sources[i]` is
 * where image i can be read (a host file, or the VM's disk). No string from
 * the user or the image is ever part of the script: image names, sources and
 * unit names are data files (`i0.name`, `i0.src`, `i0.u1`, ...) that the
 * script reads from $PI_DATA (the host) or $PI_JOB/files (the VM), always
 * inside double quotes. Results go to files in $PI_OUT named i<N>.*. Before
 * each step the job appends a mark ("i0 copy", "i0 u1 start", "settle", ...,
 * "end") to $PI_OUT/progress and, with `console`, writes it to that device
 * too ("PART-IMAGE-PORTABLE i0 u1 start"): if time runs out, the last mark
 * says where. Pure.
 */
export function buildPortableJob(images: readonly PortableImage[], sources: readonly string[], opts: { console?: string } = {}): PortableJob {
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
  const lines = [
    'export SYSTEMD_PAGER= SYSTEMD_COLORS=0 LC_ALL=C',
    'O="$PI_OUT"',
    'D="${PI_DATA:-$PI_JOB/files}"',
    'v() { cat "$D/$1"; }',
    'PCTL="portablectl --no-pager --no-legend --no-ask-password"',
    `C=${consoleDev}`,
    `mark() { echo "$*" >> "$O/progress"; if [ -n "$C" ]; then echo "${PROGRESS_MARK} $*" 2>/dev/null > "$C" || :; fi; }`,
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
  images.forEach((img, i) => {
    lines.push(`if [ "$(cat "$O/i${i}.attach.rc")" = 0 ]; then`);
    img.units.forEach((u, j) => {
      if (!isStartable(u)) return;
      lines.push(
        `  mark i${i} u${j} start`,
        `  timeout ${UNIT_START_TIMEOUT_S} systemctl start ${unit(i, j)} > "$O/i${i}.u${j}.start" 2>&1; echo $? > "$O/i${i}.u${j}.start.rc"`,
      );
    });
    lines.push('fi');
  });
  lines.push('mark settle', `sleep ${SETTLE_SECONDS}`);
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
    if (startable.length) lines.push(`  mark i${i} stop`, `  timeout ${UNIT_START_TIMEOUT_S} systemctl stop ${startable.join(' ')} > "$O/i${i}.stop" 2>&1`);
    lines.push(
      `  mark i${i} detach`,
      `  $PCTL detach --runtime "/var/tmp/$(v i${i}.name)" > "$O/i${i}.detach" 2>&1; echo $? > "$O/i${i}.detach.rc"`,
      `  rm -f "/var/tmp/$(v i${i}.name)"`,
      `elif [ "$(cat "$O/i${i}.attach.rc")" != ${IN_THE_WAY} ]; then`,
      `  rm -f "/var/tmp/$(v i${i}.name)"`,
      'fi',
    );
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

const STEP_WORDS: Record<PortableStep, string> = {
  copy: 'copying the image to /var/tmp',
  attach: 'portablectl inspect/attach',
  start: 'starting a unit',
  settle: `the ${SETTLE_SECONDS} s pause after the starts`,
  show: "reading the units' states and journals",
  stop: 'stopping the units',
  detach: 'portablectl detach',
  end: 'the end of the job',
  unknown: 'an unknown step (the job left no progress mark)',
};

function text(files: Map<string, Buffer>, name: string): string {
  return files.get(name)?.toString('utf8') ?? '';
}

function exitOf(files: Map<string, Buffer>, name: string): number | undefined {
  const t = text(files, name).trim();
  return t === '' || !/^\d+$/.test(t) ? undefined : Number(t);
}

function parseProps(t: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of t.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

/** The job's result files, per image. Pure. */
export function parsePortableResults(files: Map<string, Buffer>, images: readonly PortableImage[]): PortableCheck[] {
  return images.map((img, i) => ({
    name: img.name,
    attachExit: exitOf(files, `i${i}.attach.rc`),
    attachOutput: text(files, `i${i}.attach`).trim(),
    inspect: text(files, `i${i}.inspect`).trim(),
    list: text(files, `i${i}.list`).trim(),
    units: img.units.map((unit, j) => ({
      unit,
      started: files.has(`i${i}.u${j}.start.rc`),
      startExit: exitOf(files, `i${i}.u${j}.start.rc`),
      startOutput: text(files, `i${i}.u${j}.start`).trim(),
      props: parseProps(text(files, `i${i}.u${j}.show`)),
      journal: text(files, `i${i}.u${j}.journal`)
        .split('\n')
        .filter((l) => l.trim() !== '' && l !== '-- No entries --'),
    })),
    detachExit: exitOf(files, `i${i}.detach.rc`),
    detachOutput: text(files, `i${i}.detach`).trim(),
  }));
}

/** Did a started unit come up? Services: active, or done with status 0; other types: active. */
export function unitOk(u: UnitCheck): boolean {
  const p = u.props;
  if (p.LoadState !== 'loaded') return false;
  if (p.ActiveState === 'active') return true;
  if (!u.unit.endsWith('.service')) return false;
  return p.ActiveState === 'inactive' && p.Result === 'success' && (p.ExecMainStatus ?? '0') === '0' && u.startExit === 0;
}

function lastLines(t: string, n: number): string[] {
  return t.split('\n').filter((l) => l.trim() !== '').slice(-n);
}

/** Findings for one image's check. Pure. */
export function judgePortable(c: PortableCheck): Finding[] {
  if (c.attachExit !== 0) {
    const why = c.attachExit === undefined ? 'the check stopped before the attach' : `exit ${c.attachExit}`;
    return [
      {
        code: 'portable-attach-failed',
        path: c.name,
        message: `portablectl attach --runtime ${c.name} failed (${why}): ${lastLines(c.attachOutput, 1)[0] ?? 'no output'}`,
        actual: lastLines(c.attachOutput, 20),
      },
    ];
  }
  const findings: Finding[] = [];
  for (const u of c.units) {
    if (!u.started || unitOk(u)) continue;
    const p = u.props;
    const state = [
      `${p.ActiveState ?? 'unknown'}${p.SubState ? ` (${p.SubState})` : ''}`,
      p.Result && p.Result !== 'success' ? `result ${p.Result}` : '',
      p.ExecMainStatus && p.ExecMainStatus !== '0' ? `exit status ${p.ExecMainStatus}` : '',
      u.startExit === 124 ? `systemctl start timed out after ${UNIT_START_TIMEOUT_S} s` : '',
    ]
      .filter(Boolean)
      .join(', ');
    // The service's own last words say more than systemd's "Failed to start".
    const lines = u.journal.map((l) => l.replace(/^\[[^\]]*\]\s*/, ''));
    const last = [...lines].reverse().find((l) => !l.startsWith('systemd[')) ?? lines.at(-1);
    findings.push({
      code: u.startExit === 124 ? 'portable-service-timeout' : 'portable-service-failed',
      path: u.unit,
      message: `${u.unit} of the attached image ${c.name} did not come up: ${state}${last ? `; last journal line: ${last}` : ''}`,
      expected: u.unit.endsWith('.service') ? 'active, or exited with status 0' : 'active',
      actual: u.journal.length ? u.journal : lastLines(u.startOutput, 10),
    });
  }
  return findings;
}

// ---- where it runs ----------------------------------------------------------

/** portablectl can run here: root, systemd is PID 1, and portablectl is installed. */
export async function portabledOnHost(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false;
  const comm = (await readFile('/proc/1/comm', 'utf8').catch(() => '')).trim();
  return comm === 'systemd' && (await hasTool('portablectl'));
}

export interface CheckPortableOptions {
  scope: Scope;
  /** Hard limit of the whole check (the VM boot included). */
  timeoutMs: number;
  /** Default: the host when portabledOnHost(), else the VM. */
  where?: 'host' | 'vm';
}

export interface CheckPortableResult {
  where: 'host' | 'vm';
  /** One per image, when the job ran. */
  checks?: PortableCheck[];
  /** The job ran out of time before its end (killed on the host, or in the VM, or the VM was killed). */
  timedOut: boolean;
  /** The job's progress marks (parseProgress); empty when it never started. */
  progress: string[];
  /** Why the VM did not deliver results (then `checks` is undefined). */
  vmError?: string;
  vm?: VmResult;
  durationMs: number;
}

const MiB = 1024 * 1024;
const exists = (p: string) => access(p).then(() => true, () => false);

/** Attach and run several images in one go (one VM boot). */
export async function checkPortable(images: readonly PortableImage[], o: CheckPortableOptions): Promise<CheckPortableResult> {
  const started = Date.now();
  const where = o.where ?? ((await portabledOnHost()) ? 'host' : 'vm');
  if (where === 'host') {
    const dir = await o.scope.tempDir('part-image-portable-');
    const out = join(dir, 'out');
    await mkdir(out);
    const jobFile = join(dir, 'job.sh');
    const dataDir = join(dir, 'data');
    await mkdir(dataDir);
    const job = buildPortableJob(images, images.map((i) => i.path));
    await writeFile(jobFile, job.script);
    for (const [name, value] of Object.entries(job.data)) await writeFile(join(dataDir, name), value);
    // The job leaves alone a /var/tmp/NAME.raw that is already there; what it
    // creates, it detaches and removes. If we are interrupted in between,
    // this does it.
    const ours: PortableImage[] = [];
    for (const img of images) if (!(await exists(`/var/tmp/${img.name}`))) ours.push(img);
    o.scope.defer('detach the portable images', async () => {
      for (const img of ours) {
        const f = `/var/tmp/${img.name}`;
        if (!(await exists(f))) continue;
        const units = img.units.filter(isStartable);
        if (units.length) await run('systemctl', ['stop', ...units], { okCodes: 'any', timeoutMs: 60_000, allowTimeout: true });
        await run('portablectl', ['--no-ask-password', 'detach', '--runtime', f], { okCodes: 'any', timeoutMs: 60_000, allowTimeout: true });
        await rm(f, { force: true });
      }
    });
    const res = await run('sh', [jobFile], { env: { PI_OUT: out, PI_DATA: dataDir }, timeoutMs: o.timeoutMs, okCodes: 'any', allowTimeout: true });
    const files = new Map<string, Buffer>();
    for (const name of await readdir(out)) files.set(name, await readFile(join(out, name)));
    const progress = parseProgress(text(files, 'progress'));
    return {
      where,
      checks: parsePortableResults(files, images),
      timedOut: res.timedOut && progress.at(-1) !== 'end',
      progress,
      durationMs: Date.now() - started,
    };
  }
  let totalMb = 0;
  for (const img of images) totalMb += Math.ceil((await stat(img.path)).size / MiB);
  // The console is kept even when the VM has to be killed: the marks there say how far the job got.
  const job = buildPortableJob(images, images.map((_, i) => `/dev/disk/by-id/virtio-pi-img-${i}`), { console: '/dev/console' });
  const vm = await runVm({
    script: job.script,
    files: job.data,
    disks: images.map((img, i) => ({ path: img.path, serial: `pi-img-${i}` })),
    scratchMb: Math.ceil(totalMb * 1.1) + 128,
    timeoutMs: o.timeoutMs,
    scope: o.scope,
  });
  const progress = vm.files.has('progress') ? parseProgress(text(vm.files, 'progress')) : parseProgress(vm.console, true);
  // Killed by the host (VM timeout) or by the runner's in-guest limit (exit 124).
  const timedOut = (vm.timedOut || vm.exitCode === 124) && progress.at(-1) !== 'end';
  const vmError = vmFailure(vm, o.timeoutMs);
  if (vmError) return { where, vmError, vm, timedOut, progress, durationMs: Date.now() - started };
  return { where, checks: parsePortableResults(vm.files, images), vm, timedOut, progress, durationMs: Date.now() - started };
}

/** The time limit of one check: TCG boots take ~30 s on an idle machine; copying the image takes its share. */
export function portableTimeoutMs(imageBytes: number, bootTimeoutMs: number): number {
  return 240_000 + Math.max(bootTimeoutMs, 60_000) + Math.ceil(imageBytes / (20 * MiB)) * 1000;
}

async function runStage(ctx: StageContext): Promise<StageOutcome> {
  const manifest = ctx.imageManifest ?? (await readImageManifest(ctx.image, { hash: false }));
  const name = basename(ctx.imageName);
  const prefix = portablePrefix(name);
  const units = matchingUnits(manifest, prefix).map((u) => u.name);
  if (!units.length && !ctx.opts.portable) {
    return {
      ...skipped(`not a portable service image: no unit file matches the prefix '${prefix}' of ${name} (pass --portable to require one)`, 'not-applicable'),
      details: { prefix },
    };
  }
  const nameProblem = portableNameProblem(name);
  if (nameProblem) {
    return { status: 'failed', findings: [{ code: 'portable-bad-name', path: name, message: `portablectl cannot attach an image named ${JSON.stringify(name)}: ${nameProblem}`, actual: name }], details: { prefix } };
  }
  const image: PortableImage = { path: ctx.image, name, units };
  const size = (await stat(ctx.image)).size;
  const timeoutMs = portableTimeoutMs(size, ctx.opts.bootTimeoutMs);
  const r = await checkPortable([image], { scope: ctx.scope, timeoutMs });
  return portableOutcome(r, image, timeoutMs, { prefix, units });
}

const unavailable = (reason: string, details: Record<string, unknown>): StageOutcome => ({
  status: 'skipped', skippedBy: 'unavailable', findings: [], reason, details,
});

/**
 * The stage's verdict on one image's check (see the top of this file for
 * whose fault is what). Pure.
 */
export function portableOutcome(r: CheckPortableResult, image: PortableImage, timeoutMs: number, base: Record<string, unknown> = {}): StageOutcome {
  const details: Record<string, unknown> = { where: r.where, ...base };
  if (r.vm) details.vm = { accel: r.vm.accel, durationMs: r.vm.durationMs };
  const c = r.checks?.[0];
  if (c) {
    details.inspect = c.inspect;
    details.attach = c.attachOutput;
    details.unitStates = Object.fromEntries(
      c.units.map((u) => [u.unit, u.started ? { active: u.props.ActiveState, sub: u.props.SubState, result: u.props.Result, status: u.props.ExecMainStatus } : 'not started (template or unit type not started)']),
    );
    if (c.detachExit !== undefined) details.detach = { exitCode: c.detachExit, output: c.detachOutput };
  }
  const consoleDetails = () => (r.vm ? { console: consoleTail(r.vm.console, 30) } : {});

  // The VM never came up (or failed before the job reported): the environment.
  // design.md: a VM that cannot start is the environment's fault (exit 3), not the image's.
  const cameUp = r.where === 'host' || r.vm?.started === true;
  if (!cameUp || (!r.timedOut && !c)) {
    return unavailable(
      `the part-image VM failed (${r.vmError ?? 'no results'}); the portable check did not run. See details.console; \`part-image doctor\` checks the VM`,
      { ...details, ...consoleDetails() },
    );
  }

  if (r.timedOut) {
    // The host or the VM came up and the job began: where did the time run out?
    const hang = whereJobStopped(r.progress, [image]);
    details.timedOutIn = hang.step;
    const limit = `${Math.round(timeoutMs / 1000)} s`;
    if ((hang.step === 'start' || hang.step === 'stop') && hang.image === 0 && hang.units.length) {
      // A unit of the image hung: a finding about the image. Stopping comes
      // after the states were read, so those are judged as well.
      const what = hang.step === 'start' ? 'did not finish starting' : 'did not stop';
      const cmd = hang.step === 'start' ? `systemctl start ${hang.units[0]}` : `systemctl stop ${hang.units.join(' ')}`;
      const earlier = hang.step === 'stop' && c ? judgePortable(c) : [];
      const timeout: Finding = {
        code: 'portable-service-timeout',
        path: hang.units[0],
        message: `${hang.units.length > 1 ? `one of ${hang.units.join(', ')}` : hang.units[0]} of the attached image ${image.name} ${what}: \`${cmd}\` had not returned when the portable check ran out of time (${limit}, ${r.where === 'vm' ? 'VM boot included' : 'on the host'})`,
        expected: hang.step === 'start' ? 'the start to finish (active, or exited with status 0)' : 'the units to stop',
        actual: `${r.where === 'vm' ? 'the VM was up' : 'on the host'}; the job was still in: ${cmd}`,
      };
      return { status: 'failed', findings: [...earlier.filter((f) => f.path !== hang.units[0]), timeout], details: { ...details, ...consoleDetails() } };
    }
    // Every state was read before the detach: findings about the units still count.
    if (hang.step === 'detach' && c) {
      const findings = judgePortable(c);
      if (findings.length) return passedOrFailed(findings, details);
    }
    return unavailable(
      `the portable check ran out of time (${limit}) ${r.where === 'vm' ? 'in the part-image VM, which did come up,' : 'on the host'} during ${STEP_WORDS[hang.step]}, not while a unit of the image was starting or stopping; the check did not finish. See details${r.vm ? '.console' : ''}`,
      { ...details, ...consoleDetails() },
    );
  }

  if (c && c.attachExit === IN_THE_WAY) {
    // Not the image's problem: a file of that name is in the way.
    const f = `/var/tmp/${image.name}`;
    return unavailable(
      r.where === 'host'
        ? `${f} already exists on this host and is not part-image's (an image of that name is attached or was left behind); the portable check did not run. Remove it: \`portablectl detach --runtime ${f}\` if it is attached, then \`rm ${f}\``
        : `${f} already exists in the part-image VM (two images of the same name in one check); the portable check did not run`,
      details,
    );
  }
  return passedOrFailed(judgePortable(c!), details);
}

export const portableStage: Stage = {
  name: 'portable',
  tools: ['portablectl'],
  runs: 'portable',
  summary: 'attach the image with portablectl --runtime (on the host when systemd is PID 1, else in the VM) and start its units',
  run: runStage,
};
