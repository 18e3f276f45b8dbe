// Runs one job in the boot VM and brings its results back.
//
// The guest (see vm/recipe.json) boots the cached root image with snapshot=on
// (so it never changes), and systemd.wants=part-image-job.service starts the
// job runner once multi-user.target is reached. The runner reads the job from
// the job disk (a tar: job.sh, timeout, files/), runs it as root with a time
// limit, and writes every file the job left in $PI_OUT to ttyS1 (a host file
// here), base64-framed, then "exit N". ttyS1 is not the console, so
// serial-getty's vhangup() cannot cut it off; the unit's
// SuccessAction=/FailureAction=poweroff-force ends the VM either way, and a
// hard timeout here ends it when the guest cannot.
//
// Disks the job may read are attached read-only as virtio disks named by
// serial: the guest finds them at /dev/disk/by-id/virtio-SERIAL.
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { readFile, truncate, stat, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { pack as tarPack } from 'tar-stream';
import type { Scope } from '../cleanup.js';
import { run, type RunResult } from '../exec.js';
import { runQemu, type Accel, type QemuDisk } from '../tools/qemu.js';
import { detectAccel, forgetAccelVerdict } from './kvm.js';
import { ensureVmImage, type VmImage } from './image.js';

export const RESULT_MARK = 'PART-IMAGE-VM';
export const JOB_UNIT = 'part-image-job.service';
/** Where the guest finds the job's extra files. */
export const GUEST_JOB_FILES = '/run/part-image/job/files';

export interface VmDisk {
  /** Host file, attached read-only. */
  path: string;
  /** The guest sees /dev/disk/by-id/virtio-SERIAL; 1-20 characters of [A-Za-z0-9_-]. */
  serial: string;
}

export interface VmJob {
  /** Shell script run by /bin/sh as root in the guest, in $PI_JOB; files it writes to $PI_OUT come back. */
  script: string;
  /** Extra files for the job, name -> content; in the guest under $PI_JOB/files (GUEST_JOB_FILES). */
  files?: Record<string, string | Buffer>;
  /** Attached read-only. */
  disks?: readonly VmDisk[];
  /** Give the guest an empty ext4 of this many MiB on /var/tmp (room to copy images into). */
  scratchMb?: number;
  /** Hard limit for the whole run, boot included; qemu is killed after it. */
  timeoutMs: number;
  /** The job's own limit inside the guest (default: timeoutMs minus a boot allowance). */
  jobTimeoutMs?: number;
  scope: Scope;
  /** Use this VM image instead of ensureVmImage() (tests). */
  image?: VmImage;
}

export interface VmResults {
  /** The runner found its job disk and started the job. */
  started: boolean;
  /** The job's exit status (124: it hit its in-guest time limit); undefined when the runner never reported one. */
  exitCode?: number;
  files: Map<string, Buffer>;
  /** Errors the runner reported ("no job disk", ...). */
  errors: string[];
}

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
}

/** Parse what the runner wrote to ttyS1. Pure; a truncated stream gives what arrived complete. */
export function parseResults(text: string): VmResults {
  const out: VmResults = { started: false, files: new Map(), errors: [] };
  let file: string | undefined;
  let body: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r/g, '');
    const at = line.indexOf(`${RESULT_MARK} `);
    if (at < 0) {
      if (file !== undefined) body.push(line);
      continue;
    }
    const msg = line.slice(at + RESULT_MARK.length + 1);
    if (msg.startsWith('file ')) {
      file = msg.slice(5);
      body = [];
    } else if (msg === 'end-file') {
      if (file !== undefined) out.files.set(file, Buffer.from(body.join(''), 'base64'));
      file = undefined;
    } else if (msg === 'started') {
      out.started = true;
    } else if (msg.startsWith('exit ')) {
      const n = Number(msg.slice(5));
      if (Number.isInteger(n)) out.exitCode = n;
    } else if (msg.startsWith('error ')) {
      out.errors.push(msg.slice(6));
    }
  }
  return out;
}

/** The kernel command line of a job run. */
export function jobCmdline(image: VmImage): string[] {
  return [...image.recipe.kernelCmdline, `systemd.wants=${JOB_UNIT}`];
}

/** Time the guest needs before the job starts: boot under TCG takes ~30 s on an idle 2-core host. */
function bootAllowanceMs(accel: Accel): number {
  return accel === 'kvm' ? 30_000 : 120_000;
}

async function writeJobDisk(path: string, job: VmJob, jobTimeoutS: number): Promise<void> {
  const pack = tarPack();
  const sink = createWriteStream(path);
  pack.pipe(sink);
  const add = (name: string, content: string | Buffer, mode = 0o644) =>
    new Promise<void>((resolve, reject) => pack.entry({ name, mode, uid: 0, gid: 0, mtime: new Date(0) }, content, (err) => (err ? reject(err) : resolve())));
  await add('job.sh', job.script, 0o755);
  await add('timeout', `${jobTimeoutS}\n`);
  if (job.scratchMb) await add('scratch', '');
  for (const [name, content] of Object.entries(job.files ?? {})) {
    if (!/^[A-Za-z0-9_.@-]+$/.test(name)) throw new Error(`VM job file names must be plain names: ${name}`);
    await add(`files/${name}`, content);
  }
  pack.finalize();
  await once(sink, 'close');
  // A whole number of MiB: a disk is a whole number of sectors, and tar stops at its end-of-archive blocks.
  const size = (await stat(path)).size;
  await truncate(path, Math.ceil(size / (1024 * 1024)) * 1024 * 1024);
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

export async function runVm(job: VmJob): Promise<VmResult> {
  const started = Date.now();
  const image = job.image ?? (await ensureVmImage());
  const verdict = await detectAccel(image.kernel);
  const dir = await job.scope.tempDir('part-image-vm-');
  const pidFile = join(dir, 'qemu.pid');
  job.scope.defer('kill the VM', () => killLeftover(pidFile));

  const jobTimeoutMs = job.jobTimeoutMs ?? Math.max(job.timeoutMs - bootAllowanceMs(verdict.accel), job.timeoutMs / 2);
  const jobDisk = join(dir, 'job.tar');
  await writeJobDisk(jobDisk, job, Math.max(1, Math.floor(jobTimeoutMs / 1000)));

  const disks: QemuDisk[] = [
    { path: image.root, serial: 'pi-root', snapshot: true },
    { path: jobDisk, serial: 'pi-job', readOnly: true },
    ...(job.disks ?? []).map((d) => ({ path: d.path, serial: d.serial, readOnly: true })),
  ];
  if (job.scratchMb) {
    const scratch = join(dir, 'scratch.img');
    await writeFile(scratch, '');
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-m', '0', '-L', 'pi-scratch', '-E', 'nodiscard', scratch, `${Math.ceil(job.scratchMb)}M`]);
    disks.push({ path: scratch, serial: 'pi-scratch' });
  }

  const consoleFile = join(dir, 'console.log');
  const resultsFile = join(dir, 'results.log');
  // qemu removes its pid file when it exits cleanly: note the pid while it runs.
  let qemuPid: number | undefined;
  let watching = true;
  const watch = (async () => {
    while (watching && !qemuPid) {
      qemuPid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim()) || undefined;
      if (!qemuPid) await new Promise((res) => setTimeout(res, 100));
    }
  })();
  let r: RunResult;
  try {
    r = await runQemu(
      {
        accel: verdict.accel,
        memoryMb: image.recipe.vm.memoryMb,
        cpus: Math.max(1, Math.min(image.recipe.vm.maxCpus, availableParallelism())),
        kernel: image.kernel,
        initrd: image.initrd,
        append: jobCmdline(image),
        disks,
        serialFiles: [consoleFile, resultsFile],
        pidFile,
      },
      job.timeoutMs,
      dir,
    );
  } finally {
    watching = false;
    await watch;
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
  };
}

// eslint-disable-next-line no-control-regex
/** Terminal colour and cursor codes, as systemd prints them on a console. */
export const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

/** The last `n` non-empty console lines, without colour codes. */
export function consoleTail(text: string, n = 25): string[] {
  return text
    .replace(ANSI, '')
    .replace(/\r/g, '')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .slice(-n);
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
