// Where the portable check runs, and running it there. portablectl needs
// systemd-portabled, so systemd as PID 1: where the host has it (and we are
// root) the job runs on the host; elsewhere in the part-image VM (src/vm/),
// which is the case in CI. The same job (portable-job.ts) does the work in
// both; several images can share one VM.
import { access, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Scope } from '../cleanup.js';
import { hasTool, run } from '../exec.js';
import { log } from '../log.js';
import { GUEST_JOB_FILES, runVm, vmFailure, type VmBoot, type VmResult } from '../vm/run.js';
import { buildPortableJob, isStartable, parseProgress, phaseWords, type PortableImage } from './portable-job.js';
import { parsePortableResults, text, type PortableCheck } from './portable-judge.js';

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
  /** In the VM: stop the units and detach the images too (the VM is thrown away afterwards: skipped unless asked). */
  checkDetach?: boolean;
  /** How the VM comes up (default: runVm's). */
  boot?: VmBoot;
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
  /** In the VM: host milliseconds from the VM run's start to the arrival of each progress mark. */
  markMs?: Record<string, number>;
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
    const job = buildPortableJob(images, images.map((i) => ({ path: `/var/tmp/${i.name}`, copyFrom: i.path })));
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
  // In the VM each image is a file of the job disk, under its own name: attached where it is, never copied in the guest.
  // The console is kept even when the VM has to be killed: the marks there say how far the job got.
  const job = buildPortableJob(images, images.map((img) => ({ path: `${GUEST_JOB_FILES}/${img.name}` })), {
    console: '/dev/console',
    detach: o.checkDetach ?? false,
  });
  // The progress line names the job's step ("starting demo.service").
  let consoleText = '';
  const vmStart = Date.now();
  // Host milliseconds at which each of the job's marks reached the host (the phase table of a run).
  const markMs: Record<string, number> = {};
  const onConsole = (added: string) => {
    consoleText += added;
    const marks = parseProgress(consoleText, true);
    for (const m of marks) markMs[m] ??= Date.now() - vmStart;
    const words = phaseWords(marks, images);
    if (words) log.progress(words);
  };
  const vm = await runVm({
    script: job.script,
    files: job.data,
    hostFiles: Object.fromEntries(images.map((img) => [img.name, img.path])),
    timeoutMs: o.timeoutMs,
    scope: o.scope,
    boot: o.boot,
    onConsole,
  });
  const progress = vm.files.has('progress') ? parseProgress(text(vm.files, 'progress')) : parseProgress(vm.console, true);
  // Killed by the host (VM timeout) or by the runner's in-guest limit (exit 124).
  const timedOut = (vm.timedOut || vm.exitCode === 124) && progress.at(-1) !== 'end';
  const vmError = vmFailure(vm, o.timeoutMs);
  if (vmError) return { where, vmError, vm, timedOut, progress, durationMs: Date.now() - started };
  return { where, checks: parsePortableResults(vm.files, images), vm, markMs, timedOut, progress, durationMs: Date.now() - started };
}

/** The time limit of one check: TCG boots take ~30 s on an idle machine; copying the image takes its share. */
export function portableTimeoutMs(imageBytes: number, bootTimeoutMs: number): number {
  return 240_000 + Math.max(bootTimeoutMs, 60_000) + Math.ceil(imageBytes / (20 * MiB)) * 1000;
}

