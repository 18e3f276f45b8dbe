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
// The job can take several images at once (one VM boot for all), see
// checkPortable().
import { access, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Finding } from '../types.js';
import type { Scope } from '../cleanup.js';
import { hasTool, run, shellQuote } from '../exec.js';
import { readImageManifest } from '../image/debugfs-reader.js';
import { consoleTail, runVm, vmFailure, type VmResult } from '../vm/run.js';
import { matchingUnits, portablePrefix } from './portable-lint.js';
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
/** How long started units get to fail before their state is read. */
export const SETTLE_SECONDS = 3;
const UNIT_START_TIMEOUT_S = 90;
const PROPS = ['Id', 'LoadState', 'ActiveState', 'SubState', 'Result', 'Type', 'ExecMainCode', 'ExecMainStatus'];

export function isStartable(unit: string): boolean {
  const type = unit.slice(unit.lastIndexOf('.') + 1);
  return STARTABLE_TYPES.includes(type) && !/@\.[a-z]+$/.test(unit);
}

/**
 * The shell job (POSIX sh, run as root) that checks `images`; `sources[i]` is
 * where image i can be read (a host file, or the VM's disk). Results go to
 * files in $PI_OUT named i<N>.*. Pure.
 */
export function buildPortableJob(images: readonly PortableImage[], sources: readonly string[]): string {
  const q = shellQuote;
  const lines = [
    'export SYSTEMD_PAGER= SYSTEMD_COLORS=0 LC_ALL=C',
    'O="$PI_OUT"',
    'PCTL="portablectl --no-pager --no-legend --no-ask-password"',
  ];
  images.forEach((img, i) => {
    const f = `/var/tmp/${img.name}`;
    lines.push(
      `# image ${i}: ${img.name}`,
      `f=${q(f)}`,
      `if [ -e "$f" ]; then echo "$f already exists: another image of that name is in the way" > "$O/i${i}.attach"; echo 125 > "$O/i${i}.attach.rc"`,
      `elif ! cp --sparse=always ${q(sources[i])} "$f" > "$O/i${i}.attach" 2>&1; then echo 126 > "$O/i${i}.attach.rc"`,
      'else',
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
      lines.push(`  timeout ${UNIT_START_TIMEOUT_S} systemctl start ${q(u)} > "$O/i${i}.u${j}.start" 2>&1; echo $? > "$O/i${i}.u${j}.start.rc"`);
    });
    lines.push('fi');
  });
  lines.push(`sleep ${SETTLE_SECONDS}`);
  images.forEach((img, i) => {
    const startable = img.units.filter(isStartable);
    lines.push(`if [ "$(cat "$O/i${i}.attach.rc")" = 0 ]; then`);
    img.units.forEach((u, j) => {
      if (!isStartable(u)) return;
      lines.push(
        `  systemctl show ${PROPS.map((p) => `-p ${p}`).join(' ')} ${q(u)} > "$O/i${i}.u${j}.show" 2>&1`,
        `  journalctl -b -u ${q(u)} --no-pager --no-hostname -o short-monotonic -n 50 > "$O/i${i}.u${j}.journal" 2>&1`,
      );
    });
    if (startable.length) lines.push(`  timeout ${UNIT_START_TIMEOUT_S} systemctl stop ${startable.map(q).join(' ')} > "$O/i${i}.stop" 2>&1`);
    lines.push(
      `  $PCTL detach --runtime ${q(`/var/tmp/${img.name}`)} > "$O/i${i}.detach" 2>&1; echo $? > "$O/i${i}.detach.rc"`,
      `  rm -f ${q(`/var/tmp/${img.name}`)}`,
      `elif [ "$(cat "$O/i${i}.attach.rc")" != 125 ]; then`,
      `  rm -f ${q(`/var/tmp/${img.name}`)}`,
      'fi',
    );
  });
  return `${lines.join('\n')}\n`;
}

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
      code: 'portable-service-failed',
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
  /** Why the VM did not deliver results (then `checks` is undefined). */
  vmError?: string;
  vm?: VmResult;
  durationMs: number;
}

const MiB = 1024 * 1024;
const ANY_EXIT = [-1, ...Array.from({ length: 256 }, (_, i) => i)];
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
    await writeFile(jobFile, buildPortableJob(images, images.map((i) => i.path)));
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
        if (units.length) await run('systemctl', ['stop', ...units], { okCodes: ANY_EXIT, timeoutMs: 60_000 });
        await run('portablectl', ['--no-ask-password', 'detach', '--runtime', f], { okCodes: ANY_EXIT, timeoutMs: 60_000 });
        await rm(f, { force: true });
      }
    });
    await run('sh', [jobFile], { env: { PI_OUT: out }, timeoutMs: o.timeoutMs, okCodes: ANY_EXIT });
    const files = new Map<string, Buffer>();
    for (const name of await readdir(out)) files.set(name, await readFile(join(out, name)));
    return { where, checks: parsePortableResults(files, images), durationMs: Date.now() - started };
  }
  let totalMb = 0;
  for (const img of images) totalMb += Math.ceil((await stat(img.path)).size / MiB);
  const vm = await runVm({
    script: buildPortableJob(images, images.map((_, i) => `/dev/disk/by-id/virtio-pi-img-${i}`)),
    disks: images.map((img, i) => ({ path: img.path, serial: `pi-img-${i}` })),
    scratchMb: Math.ceil(totalMb * 1.1) + 128,
    timeoutMs: o.timeoutMs,
    scope: o.scope,
  });
  const vmError = vmFailure(vm, o.timeoutMs);
  if (vmError) return { where, vmError, vm, durationMs: Date.now() - started };
  return { where, checks: parsePortableResults(vm.files, images), vm, durationMs: Date.now() - started };
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
  const image: PortableImage = { path: ctx.image, name, units };
  const size = (await stat(ctx.image)).size;
  const r = await checkPortable([image], { scope: ctx.scope, timeoutMs: portableTimeoutMs(size, ctx.opts.bootTimeoutMs) });
  const details: Record<string, unknown> = { where: r.where, prefix, units };
  if (r.vm) {
    details.vm = { accel: r.vm.accel, durationMs: r.vm.durationMs };
  }
  if (!r.checks) {
    // design.md: a VM that cannot start is the environment's fault (exit 3), not the image's.
    return {
      status: 'skipped', skippedBy: 'unavailable', findings: [],
      reason: `the part-image VM failed (${r.vmError}); the portable check did not run. See details.console; \`part-image doctor\` checks the VM`,
      details: { ...details, console: r.vm ? consoleTail(r.vm.console, 30) : undefined },
    };
  }
  const c = r.checks[0];
  details.inspect = c.inspect;
  details.attach = c.attachOutput;
  details.unitStates = Object.fromEntries(
    c.units.map((u) => [u.unit, u.started ? { active: u.props.ActiveState, sub: u.props.SubState, result: u.props.Result, status: u.props.ExecMainStatus } : 'not started (template or unit type not started)']),
  );
  if (c.detachExit !== undefined) details.detach = { exitCode: c.detachExit, output: c.detachOutput };
  return passedOrFailed(judgePortable(c), details);
}

export const portableStage: Stage = {
  name: 'portable',
  summary: 'attach the image with portablectl --runtime (on the host when systemd is PID 1, else in the VM) and start its units',
  run: runStage,
};
