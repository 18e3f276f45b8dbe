// What goes into the VM and what comes back: the job disk (a tar the guest's
// runner reads: job.sh, timeout, seed, now, disks, files/) and the parser of
// the runner's ttyS1 stream (base64-framed files, then "exit N").
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { stat, truncate } from 'node:fs/promises';
import { pack as tarPack } from 'tar-stream';

export const RESULT_MARK = 'PART-IMAGE-VM';
export const JOB_UNIT = 'part-image-job.service';
/** Where the guest finds the job's extra files. */
export const GUEST_JOB_FILES = '/run/part-image/job/files';

export interface JobDiskContent {
  script: string;
  files?: Record<string, string | Buffer>;
  /** Serials of the disks the runner waits for (their /dev/disk/by-id links) before the job starts. */
  disks: readonly string[];
  scratch: boolean;
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
}

/**
 * Writes the job disk. It carries 64 fresh random bytes and the host's time,
 * which the runner feeds to the guest's random generator and clock: a
 * restored VM would otherwise share both with every restore of its state.
 */
export async function writeJobDisk(path: string, job: JobDiskContent): Promise<void> {
  const pack = tarPack();
  const sink = createWriteStream(path);
  pack.pipe(sink);
  const add = (name: string, content: string | Buffer, mode = 0o644) =>
    new Promise<void>((resolve, reject) => pack.entry({ name, mode, uid: 0, gid: 0, mtime: new Date(0) }, content, (err) => (err ? reject(err) : resolve())));
  await add('job.sh', job.script, 0o755);
  await add('timeout', `${job.jobTimeoutS}\n`);
  await add('seed', randomBytes(64));
  await add('now', `${(Date.now() / 1000).toFixed(3)}\n`);
  await add('disks', job.disks.map((d) => `${d}\n`).join(''));
  if (job.scratch) await add('scratch', '');
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

/** True once the runner's stream holds `what` as a whole line ("ready", "begin", "exit 0"...): `what` may be a prefix. Pure. */
export function resultsSay(text: string, what: string): boolean {
  const lines = text.split('\n');
  lines.pop(); // not ended yet: the guest may still be writing it
  return lines.some((l) => l.replace(/\r/g, '').includes(`${RESULT_MARK} ${what}`));
}
