// Runs one job in the part-image VM and brings its results back.
//
// Two ways up (VmJob.boot, PART_IMAGE_VM_BOOT):
// - restore (the default): a booted VM saved once (state.ts) is restored and
//   given its disks by hot-plug (restore.ts): about a second to the job
//   under TCG. A state that does not restore is dropped and saved anew, with
//   one log line; when that fails too, the job boots the VM cold.
// - cold: the VM boots for the job with every disk attached from the start,
//   and systemd.wants=part-image-job.service starts the runner once
//   basic.target is reached. The unit's SuccessAction=/FailureAction=
//   poweroff-force ends the VM when the runner ends.
// Either way the guest's runner (see vm/recipe.json) mounts the job disk
// (job.ts: an ext4 at SCSI LUN 0 with the job, its files and its scratch
// room), runs the job as root with a time limit, and writes the files the
// job left in $PI_OUT to ttyS1 (a host file here) as one base64 tar, then
// "exit N". ttyS1 is not the console, so serial-getty's vhangup() cannot cut
// it off; a hard timeout here ends a VM that does not end.
//
// The root is the virtio disk /dev/vda. Every other disk is a SCSI disk of
// the VM's virtio-scsi controller: the job disk at LUN 0 (writable), the
// disks the job reads at LUN 1, 2, ... (read-only), which the runner links
// at guestDisk(SERIAL) (/run/part-image/disks/SERIAL) before the job starts.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { consoleTail } from '../boot/console.js';
import { log } from '../log.js';
import { runQemu, type Accel, type QemuDisk, type QemuSpec } from '../tools/qemu.js';
import { qemuVersion } from '../tools/qemu.js';
import type { Scope } from '../cleanup.js';
import type { RunResult } from '../exec.js';
import { detectAccel, forgetAccelVerdict, type AccelVerdict } from './kvm.js';
import { ensureVmImage, type VmImage } from './image.js';
import { JOB_LUN, JOB_UNIT, parseResults, writeJobDisk, type VmResults } from './job.js';
import { runRestored } from './restore.js';
import { dropState, ensureState, stateKey, stateKeyParts, type MachineShape } from './state.js';
import { FileTail } from './watch.js';

export { GUEST_JOB_FILES, guestDisk, JOB_UNIT, parseResults, RESULT_MARK, type VmResults } from './job.js';

export interface VmDisk {
  /** Host file, attached read-only. */
  path: string;
  /** The guest finds it at guestDisk(SERIAL); 1-20 characters of [A-Za-z0-9_-]. */
  serial: string;
}

export interface VmJob {
  /** Shell script run by /bin/sh as root in the guest, in $PI_JOB; files it writes to $PI_OUT come back. */
  script: string;
  /** Extra files for the job, name -> content; in the guest under $PI_JOB/files (GUEST_JOB_FILES). */
  files?: Record<string, string | Buffer>;
  /** Host files the job reads in place, name -> host path: beside `files` in the guest, put on the job disk with their holes. */
  hostFiles?: Record<string, string>;
  /** Attached read-only. */
  disks?: readonly VmDisk[];
  /** Give the guest this many MiB of free room on /var/tmp (on the job disk). */
  scratchMb?: number;
  /** Hard limit for the whole run, boot included; qemu is killed after it. */
  timeoutMs: number;
  /** The job's own limit inside the guest (default: timeoutMs minus a boot allowance). */
  jobTimeoutMs?: number;
  scope: Scope;
  /** Use this VM image instead of ensureVmImage() (tests). */
  image?: VmImage;
  /** restore (default, PART_IMAGE_VM_BOOT=restore): a saved booted VM; cold (PART_IMAGE_VM_BOOT=cold): boot it for this job. */
  boot?: VmBoot;
  /** New console text (ttyS0) as it comes: for progress lines. */
  onConsole?: (text: string) => void;
}

export type VmBoot = 'restore' | 'cold';

export interface VmResult extends VmResults {
  accel: Accel;
  /** The host killed qemu after timeoutMs. */
  timedOut: boolean;
  qemuExitCode: number;
  qemuStderr: string;
  /** qemu's process id (from its pid file), to prove it is gone. */
  qemuPid?: number;
  /** What the guest printed on its console (ttyS0): kernel and systemd. */
  console: string;
  /** The job's stdout and stderr. */
  jobLog: string;
  durationMs: number;
  /** How the VM came up: restored from a saved state, or booted (cold, or the fallback when no state would restore). */
  boot: VmBoot;
  /** Host milliseconds from the start of the run to each phase it reached (restored runs: qmp, restored, attached, begin, started, exit, quit). */
  phases: Record<string, number>;
}

/** The kernel command line of a cold job run. */
export function jobCmdline(image: VmImage): string[] {
  return [...image.recipe.kernelCmdline, `systemd.wants=${JOB_UNIT}`];
}

/** Time the guest needs before the job starts on a cold boot: ~30 s under TCG on an idle 2-core host. */
function bootAllowanceMs(accel: Accel, boot: VmBoot): number {
  if (boot === 'restore') return accel === 'kvm' ? 10_000 : 30_000;
  return accel === 'kvm' ? 30_000 : 120_000;
}

/** How VMs come up unless a job says: PART_IMAGE_VM_BOOT=cold|restore, default restore. */
export function defaultBoot(env: NodeJS.ProcessEnv = process.env): VmBoot {
  return env.PART_IMAGE_VM_BOOT === 'cold' ? 'cold' : 'restore';
}

/** Kill a qemu left behind (the run was interrupted): its pid file names it, its argv proves it is ours. */
async function killLeftover(pidFile: string): Promise<void> {
  const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
  if (!pid) return;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (!cmdline.includes(pidFile)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** The machine every run of `image` gets: what a saved state is keyed by. */
function machine(image: VmImage, verdict: AccelVerdict): { shape: MachineShape; spec: Omit<QemuSpec, 'disks' | 'serialFiles' | 'append'> } {
  const shape: MachineShape = {
    accel: verdict.accel,
    cpu: verdict.accel === 'kvm' ? 'host' : 'max',
    memoryMb: image.recipe.vm.memoryMb,
    cpus: Math.max(1, Math.min(image.recipe.vm.maxCpus, availableParallelism())),
  };
  return { shape, spec: { accel: shape.accel, cpu: shape.cpu, memoryMb: shape.memoryMb, cpus: shape.cpus, kernel: image.kernel, initrd: image.initrd, scsi: true } };
}

/** The key of the saved state that runs of `image` restore on this host (state.ts): for tools and tests that look into the cache. */
export async function savedStateKey(image: VmImage): Promise<string> {
  const { shape } = machine(image, await detectAccel(image.kernel));
  return stateKey(stateKeyParts(image, shape, (await qemuVersion()) ?? 'unknown'));
}

export async function runVm(job: VmJob): Promise<VmResult> {
  const started = Date.now();
  const image = job.image ?? (await ensureVmImage());
  const verdict = await detectAccel(image.kernel);
  const dir = await job.scope.tempDir('part-image-vm-');
  const pidFile = join(dir, 'qemu.pid');
  job.scope.defer('kill the VM', () => killLeftover(pidFile));
  let boot = job.boot ?? defaultBoot();

  const jobTimeoutMs = job.jobTimeoutMs ?? Math.max(job.timeoutMs - bootAllowanceMs(verdict.accel, boot), job.timeoutMs / 2);
  const jobDisk = join(dir, 'job.img');
  const extra = (job.disks ?? []).map((d, i) => ({ path: d.path, serial: d.serial, readOnly: true, lun: JOB_LUN + 1 + i }));
  const disks = [{ path: jobDisk, serial: 'pi-job', readOnly: false, lun: JOB_LUN }, ...extra];
  let staged = 0;
  const writeJob = async () => {
    const work = join(dir, `stage-${staged++}`);
    await writeJobDisk(jobDisk, work, {
      script: job.script,
      files: job.files,
      hostFiles: job.hostFiles,
      disks: extra,
      scratchMb: job.scratchMb,
      jobTimeoutS: Math.max(1, Math.floor(jobTimeoutMs / 1000)),
    });
    await rm(work, { recursive: true, force: true });
  };
  const consoleFile = join(dir, 'console.log');
  const resultsFile = join(dir, 'results.log');
  const { shape, spec } = machine(image, verdict);
  let r: RunResult | undefined;
  let phases: Record<string, number> = {};
  // qemu removes its pid file when it exits cleanly: note the pid while it runs.
  let qemuPid: number | undefined;
  let watching = true;
  const pidWatch = (async () => {
    while (watching && !qemuPid) {
      qemuPid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim()) || undefined;
      if (!qemuPid) await new Promise((res) => setTimeout(res, 50));
    }
  })();
  try {

  if (boot === 'restore') {
    const version = (await qemuVersion()) ?? 'unknown';
    // Two states at most (the cached one, one saved anew); a stall tries the same state once more.
    let stallRetried = false;
    for (let attempt = 1; attempt <= 2 && !r; attempt++) {
      let saved;
      try {
        log.progress('getting the saved VM ready');
        saved = await ensureState({ image, shape, qemuVersion: version, scope: job.scope, spec });
      } catch (err) {
        log.info(`VM: cannot save a ready VM (${(err as Error).message}); booting it for this job instead`);
        break;
      }
      for (const f of [consoleFile, resultsFile]) await writeFile(f, '');
      const out = await runRestored({
          spec: { ...spec, append: [] },
          saved,
          dir,
          consoleFile,
          resultsFile,
          pidFile,
          disks,
          // Made while qemu loads the saved state: the seed and the time in it are this run's.
          prepare: writeJob,
          timeoutMs: job.timeoutMs,
          beginTimeoutMs: bootAllowanceMs(verdict.accel, 'restore'),
          onConsole: job.onConsole,
          onPhase: (p) => log.progress(p),
        });
      if (out.restored) {
        r = out.qemu;
        phases = out.phases;
        break;
      }
      if (out.stalled && !stallRetried) {
        stallRetried = true;
        attempt--;
        log.info(`VM: restoring the saved VM state ${saved.dir} stalled (${out.why}): trying it once more`);
        continue;
      }
      log.info(`VM: the saved VM state ${saved.dir} did not restore (${out.why}): ${attempt === 1 ? 'throwing it away and saving a new one' : 'throwing it away; booting the VM for this job instead'}`);
      await dropState(saved.dir);
    }
    if (!r) boot = 'cold';
  }

  if (!r) {
    await writeJob();
    for (const f of [consoleFile, resultsFile]) await writeFile(f, '');
    r = await runCold(job, image, spec, { dir, pidFile, consoleFile, resultsFile, disks });
  }
  } finally {
    watching = false;
    await pidWatch;
  }
  const results = parseResults(await readFile(resultsFile, 'utf8').catch(() => ''));
  const consoleText = await readFile(consoleFile, 'utf8').catch(() => '');
  if (verdict.accel === 'kvm' && r.timedOut && consoleText.trim() === '') await forgetAccelVerdict(image.kernel);
  return {
    ...results,
    accel: verdict.accel,
    timedOut: r.timedOut,
    qemuExitCode: r.exitCode,
    qemuStderr: r.stderr,
    qemuPid,
    console: consoleText,
    jobLog: results.files.get('job.log')?.toString('utf8') ?? '',
    durationMs: Date.now() - started,
    boot,
    phases,
  };
}

interface ColdPaths {
  dir: string;
  pidFile: string;
  consoleFile: string;
  resultsFile: string;
  disks: QemuDisk[];
}

/** The VM booted for this job, every disk attached from the start. */
async function runCold(job: VmJob, image: VmImage, spec: Omit<QemuSpec, 'disks' | 'serialFiles' | 'append'>, p: ColdPaths): Promise<RunResult> {
  const disks: QemuDisk[] = [{ path: image.root, serial: 'pi-root', snapshot: true }, ...p.disks];
  let watching = true;
  const consoleTailer = new FileTail(p.consoleFile);
  const watch = (async () => {
    while (watching && job.onConsole) {
      const added = await consoleTailer.poll();
      if (added) job.onConsole(added);
      await new Promise((res) => setTimeout(res, 100));
    }
  })();
  try {
    log.progress('booting the VM');
    return await runQemu({ ...spec, append: jobCmdline(image), disks, serialFiles: [p.consoleFile, p.resultsFile], pidFile: p.pidFile }, job.timeoutMs, p.dir);
  } finally {
    watching = false;
    await watch;
  }
}

/** Why a VM run did not deliver the job's result, or undefined when it did. */
export function vmFailure(r: VmResult, timeoutMs: number): string | undefined {
  if (r.exitCode !== undefined) return undefined;
  const last = consoleTail(r.console, 1)[0] ?? '(nothing on the console)';
  if (r.errors.length) return `the VM job runner failed: ${r.errors.join('; ')}`;
  if (r.timedOut) {
    const where = r.started ? 'the job was still running' : 'the VM had not finished booting';
    return `the VM (${r.accel}) was killed after ${Math.round(timeoutMs / 1000)} s: ${where}; last console line: ${last}`;
  }
  const why = r.qemuStderr.trim() ? `qemu said: ${r.qemuStderr.trim().split('\n').slice(-1)[0]}` : `last console line: ${last}`;
  return `the VM (${r.accel}) stopped (qemu exit ${r.qemuExitCode}) before the job reported; ${why}`;
}
