// What goes into the VM and what comes back.
//
// In: the job disk, a small ext4 (label pi-job) made with mke2fs -d from a
// staging folder: job.sh, timeout, seed, now, disks ("LUN SERIAL" lines),
// files/ (the job's data and the host files it reads in place, such as an
// image to attach) and, when asked, scratch/ (free room, bound on /var/tmp).
// It is the SCSI disk at LUN 0; the guest's runner mounts it read-write at
// /run/part-image/job.
//
// Back: the runner's ttyS1 stream: "begin", "started", "at UPTIME STEP"
// marks, the job's output folder as one base64 tar ("tar" ... "end-tar"),
// then "exit N".
import { randomBytes } from 'node:crypto';
import { link, mkdir, realpath, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { copySparse } from '../tools/cp.js';
import { mke2fs, writeMke2fsConf } from '../tools/mke2fs.js';

export const RESULT_MARK = 'PART-IMAGE-VM';
export const JOB_UNIT = 'part-image-job.service';
/** Where the guest mounts the job disk. */
export const GUEST_JOB = '/run/part-image/job';
/** Where the guest finds the job's extra files (VmJob.files and hostFiles). */
export const GUEST_JOB_FILES = `${GUEST_JOB}/files`;
/** The LUN of the job disk; the job's other disks follow it. */
export const JOB_LUN = 0;
export const JOB_LABEL = 'pi-job';

/** Where the guest finds the job's disk with this serial (a link the runner makes to /dev/sdX). */
export function guestDisk(serial: string): string {
  return `/run/part-image/disks/${serial}`;
}

export interface JobDiskContent {
  script: string;
  files?: Record<string, string | Buffer>;
  /** Host files the job reads in place: name -> host path (kept sparse; shared by a hard link when it can be). */
  hostFiles?: Record<string, string>;
  /** The job's other disks: the runner links guestDisk(serial) to the SCSI disk at lun before the job starts. */
  disks: readonly { lun: number; serial: string }[];
  /** Free room on the job disk, bound on the guest's /var/tmp. */
  scratchMb?: number;
  jobTimeoutS: number;
}

export interface VmResults {
  /** The runner found its job disk and started the job. */
  started: boolean;
  /** The job's exit status (124: it hit its in-guest time limit); undefined when the runner never reported one. */
  exitCode?: number;
  files: Map<string, Buffer>;
  /** Errors the runner reported ("no job disk", ...). */
  errors: string[];
  /** Guest uptime in seconds at each of the runner's steps: mounted, reseeded (restored runs), disks, ended. */
  guestMarks: Record<string, number>;
}

const NAME = /^[A-Za-z0-9_.@-]+$/;
const MiB = 1024 * 1024;

/**
 * Writes the job disk at `path`, staged in `work` (an empty folder of this
 * run). It carries 64 fresh random bytes and the host's time, which the
 * runner feeds to the guest's random generator and clock: a restored VM
 * would otherwise share both with every restore of its state.
 */
export async function writeJobDisk(path: string, work: string, job: JobDiskContent): Promise<void> {
  const root = join(work, 'job');
  await mkdir(join(root, 'files'), { recursive: true });
  if (job.scratchMb) await mkdir(join(root, 'scratch'));
  const put = (name: string, content: string | Buffer, mode = 0o644) => writeFile(join(root, name), content, { mode });
  await put('job.sh', job.script, 0o755);
  await put('timeout', `${job.jobTimeoutS}\n`);
  await put('disks', job.disks.map((d) => `${d.lun} ${d.serial}\n`).join(''));
  let bytes = 0;
  for (const [name, content] of Object.entries(job.files ?? {})) {
    if (!NAME.test(name)) throw new Error(`VM job file names must be plain names: ${name}`);
    await put(`files/${name}`, content);
    bytes += Buffer.byteLength(content);
  }
  for (const [name, from] of Object.entries(job.hostFiles ?? {})) {
    if (!NAME.test(name) || job.files?.[name] !== undefined) throw new Error(`VM job host file names must be plain names, unlike the job's other files: ${name}`);
    const to = join(root, 'files', name);
    // The file itself, not a symlink to it: link(2) would link the symlink, which points nowhere in the guest.
    const file = await realpath(from);
    await link(file, to).catch(() => copySparse(file, to));
    bytes += (await stat(to)).blocks * 512;
  }
  // Last, so that it is as fresh as it can be.
  await put('seed', randomBytes(64).toString('hex'));
  await put('now', `${(Date.now() / 1000).toFixed(3)}\n`);
  // Room for the files, the scratch room, and the filesystem's own blocks (inode tables, about 2% at 4 KiB blocks).
  const dataMb = Math.ceil(bytes / MiB) + Math.ceil(job.scratchMb ?? 0);
  const sizeMb = dataMb + Math.ceil(dataMb * 0.05) + 16;
  // part-image's own mke2fs.conf, not the host's: the guest kernel mounts what every build makes.
  await mke2fs(path, sizeMb, { label: JOB_LABEL, fromDir: root, noJournal: true, configFile: await writeMke2fsConf(work) });
}

/** Parse what the runner wrote to ttyS1. Pure; a truncated stream gives what arrived complete. */
export function parseResults(text: string): VmResults {
  const out: VmResults = { started: false, files: new Map(), errors: [], guestMarks: {} };
  let inTar = false;
  let body: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r/g, '');
    const at = line.indexOf(`${RESULT_MARK} `);
    if (at < 0) {
      if (inTar) body.push(line);
      continue;
    }
    const msg = line.slice(at + RESULT_MARK.length + 1);
    if (msg === 'tar') {
      inTar = true;
      body = [];
    } else if (msg === 'end-tar') {
      if (inTar) {
        for (const [name, content] of filesOfTar(Buffer.from(body.join(''), 'base64'))) out.files.set(name, content);
      }
      inTar = false;
    } else if (msg === 'started') {
      out.started = true;
    } else if (msg.startsWith('at ')) {
      const m = /^at (\d+(?:\.\d+)?) (\S+)$/.exec(msg);
      if (m) out.guestMarks[m[2]] ??= Number(m[1]);
    } else if (msg.startsWith('exit ')) {
      const n = Number(msg.slice(5));
      if (Number.isInteger(n)) out.exitCode = n;
    } else if (msg.startsWith('error ')) {
      out.errors.push(msg.slice(6));
    }
  }
  return out;
}

/**
 * The regular files of a tar (ustar or GNU, as GNU tar writes them), by base
 * name; what follows a damaged or cut header is left out. Pure.
 */
export function filesOfTar(tar: Buffer): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const field = (h: Buffer, from: number, len: number) => {
    const s = h.subarray(from, from + len);
    const nul = s.indexOf(0);
    return (nul < 0 ? s : s.subarray(0, nul)).toString('utf8');
  };
  let longName: string | undefined;
  for (let off = 0; off + 512 <= tar.length; ) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const sum = parseInt(field(h, 148, 8).trim() || 'x', 8);
    let check = 0;
    for (let i = 0; i < 512; i++) check += i >= 148 && i < 156 ? 32 : h[i];
    if (sum !== check) break;
    const size = parseInt(field(h, 124, 12).trim() || '0', 8);
    const type = String.fromCharCode(h[156] || 48);
    const start = off + 512;
    if (start + size > tar.length) break;
    const data = tar.subarray(start, start + size);
    off = start + Math.ceil(size / 512) * 512;
    if (type === 'L') {
      longName = field(data, 0, data.length);
      continue;
    }
    const prefix = field(h, 345, 155);
    const name = longName ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100));
    longName = undefined;
    if (type !== '0') continue;
    const base = name.replace(/\/+$/, '').split('/').pop() ?? '';
    if (base && base !== '.' && base !== '..') files.set(base, Buffer.from(data));
  }
  return files;
}

/** True once the runner's stream holds `what` as a whole line ("ready", "begin", "exit 0"...): `what` may be a prefix. Pure. */
export function resultsSay(text: string, what: string): boolean {
  const lines = text.split('\n');
  lines.pop(); // not ended yet: the guest may still be writing it
  return lines.some((l) => l.replace(/\r/g, '').includes(`${RESULT_MARK} ${what}`));
}
