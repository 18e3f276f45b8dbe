// The debugfs side of the rootless image reader (image/debugfs-reader.ts):
// the pool of debugfs sessions a read runs its batches in, a level's `ls -p`
// batches and a set of inodes' `stat` batches, the
// xattr values `stat` leaves out, and debugfs's error output read as damage
// (debugfs exits 0 whatever it finds).
import { availableParallelism } from 'node:os';
import { Scope, closeScope, settleAll } from '../cleanup.js';
import { limiter } from '../walk/hash.js';
import { UsageError } from '../errors.js';
import { aclDiskToXattr, isAclXattr } from '../manifest/acl.js';
import { DebugfsSession, quoteDebugfsArg, runDebugfs, splitDebugfsOutput, type DebugfsResult } from '../tools/debugfs.js';
import { parseLsPSections, type LsSection } from '../tools/debugfs-ls.js';
import { parseStatSections, type InodeStat } from '../tools/debugfs-stat.js';
import { parseEaGetHex } from '../tools/debugfs-xattr.js';

/** Damage found deep in the reader; readImageManifest() names the image. */
export class Damage extends Error {}

/** Most commands per debugfs process; a bigger batch is split over processes run side by side. */
export const BATCH = 4000;

/**
 * How many debugfs processes the reader runs at once, over every level and
 * every read of this process (one more per read beyond the first, when
 * reads run side by side): PART_IMAGE_JOBS, else the cores. Unbounded, a
 * 500k-entry image started 100 of them on 2 cores (and Node warned about the
 * abort listeners each adds to the shutdown signal).
 */
export function readerJobs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.PART_IMAGE_JOBS;
  if (raw === undefined || raw === '') return availableParallelism();
  if (!/^[0-9]{1,3}$/.test(raw) || Number(raw) < 1) {
    throw new UsageError(`PART_IMAGE_JOBS=${raw}: expected a whole number of processes from 1 to 999`, 'Unset it to run as many as there are cores.');
  }
  return Number(raw);
}

let slot: (<T>(fn: () => Promise<T>) => Promise<T>) | undefined;

/** Runs `fn` (one debugfs process) once a slot is free. */
export function inSlot<T>(fn: () => Promise<T>): Promise<T> {
  slot ??= limiter(readerJobs());
  return slot(fn);
}

/** The first path of an inode, for messages. */
export interface PathOf {
  get(ino: number): string | undefined;
}

export interface Node {
  path: string;
  ino: number;
}

// ---------------------------------------------------------------------------
// The debugfs processes of one read

/** Commands per batch of a session: small enough that the parsing of one runs beside debugfs running the next. */
export const SESSION_BATCH = 1000;
/** Bytes of output after which a session is ended and a new one started (its output file is removed then). */
const RETIRE_BYTES = 64 * 1024 * 1024;
/** Batches handed to one session ahead of their answers: debugfs goes on while the last answer is parsed. */
const AHEAD = 2;

/** Sessions open or opening in this process, over every pool. */
let liveSessions = 0;

function endSession(s: DebugfsSession): Promise<void> {
  return s.close().then(() => undefined, () => undefined).finally(() => {
    liveSessions--;
  });
}

interface Job {
  cmds: string[];
  resolve: (out: Buffer) => void;
  reject: (err: unknown) => void;
}

/**
 * The debugfs sessions of one read (tools/debugfs.ts DebugfsSession): at
 * most readerJobs() processes in this whole process (each read has at
 * least one: two reads at once may have two), opened as the work asks for
 * them and kept until close(). A batch waits in the pool until a session
 * has fewer than AHEAD batches; urgent batches (a level's listings, which
 * every later level waits for) go before the others, to the least busy
 * session, one past AHEAD if need be.
 */
export class DebugfsPool {
  private readonly sessions: DebugfsSession[] = [];
  /** Sessions still opening: each settles once its session is in `sessions`, or failed. */
  private readonly opening = new Set<Promise<void>>();
  private readonly urgent: Job[] = [];
  private readonly others: Job[] = [];
  private failure: unknown;
  private closed = false;
  private readonly retired: Promise<void>[] = [];
  private readonly scope = new Scope();

  constructor(
    private readonly image: string,
    private readonly size = readerJobs(),
    private readonly retireBytes = RETIRE_BYTES,
  ) {}

  /** The raw output of `cmds`, run in one session. */
  run(cmds: string[], urgent = false): Promise<Buffer> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error('debugfs pool already closed'));
    return new Promise<Buffer>((resolve, reject) => {
      (urgent ? this.urgent : this.others).push({ cmds, resolve, reject });
      this.pump();
    });
  }

  /** Ends every session (each runs what it was handed first) and waits for them to exit. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled(this.opening);
    await Promise.allSettled([...this.sessions.map(endSession), ...this.retired]);
    await closeScope(this.scope);
  }

  private pump(): void {
    // A session whose output file has grown big ends once it has answered, and a new one takes over.
    for (const s of this.sessions.filter((x) => x.outputBytes >= this.retireBytes)) {
      this.sessions.splice(this.sessions.indexOf(s), 1);
      this.retired.push(endSession(s));
    }
    for (;;) {
      const queue = this.urgent.length > 0 ? this.urgent : this.others;
      if (queue.length === 0 || this.failure !== undefined) return;
      let best: DebugfsSession | undefined;
      for (const s of this.sessions) if (!best || s.pendingBatches < best.pendingBatches) best = s;
      const room = queue === this.urgent ? AHEAD + 1 : AHEAD;
      const opened = this.sessions.length + this.opening.size;
      // A pool's first session opens whatever other reads run; more only while the process has fewer than `size`.
      const more = opened === 0 || (opened < this.size && liveSessions < this.size);
      if ((!best || best.pendingBatches > 0) && more && !this.closed) this.openOne();
      if (!best || best.pendingBatches >= room) return;
      const job = queue.shift()!;
      best.run(job.cmds).then(job.resolve, job.reject).finally(() => this.pump());
    }
  }

  private openOne(): void {
    liveSessions++;
    const opening: Promise<void> = DebugfsSession.open(this.image, this.scope).then(
      (s) => {
        this.opening.delete(opening);
        this.sessions.push(s);
        const said = s.preamble.split('\n').map((l) => l.trim()).filter((l) => l !== '');
        // What debugfs printed on opening the filesystem ("Checksum errors in
        // superblock!  Retrying...", a group descriptor it fell back from):
        // the image is damaged even when every command then succeeds.
        if (said.length > 0) this.fail(new Damage(`debugfs, opening it: ${firstError(said)}`));
        else this.pump();
      },
      (err: unknown) => {
        this.opening.delete(opening);
        liveSessions--;
        this.fail(err);
      },
    );
    this.opening.add(opening);
  }

  private fail(err: unknown): void {
    this.failure ??= err;
    for (const job of this.urgent.splice(0).concat(this.others.splice(0))) job.reject(this.failure);
  }
}

// ---------------------------------------------------------------------------
// A level's listings, and a set of inodes, in batches over the pool

/** The `ls -p` of every directory in `dirs`, by inode. */
export async function listLevel(pool: DebugfsPool, dirs: Node[]): Promise<Map<number, LsSection>> {
  // settleAll: every batch has ended before one's failure leaves.
  const lists = await settleAll(chunks(dirs, SESSION_BATCH).map((part) => listDirs(pool, part)));
  return new Map(lists.flatMap((m) => [...m]));
}

/**
 * The `stat` of every inode in `inodes`, handed to `take` a batch at a time
 * as each batch ends: a level of 400,000 files held all its stats at once
 * otherwise (about 600 MB at the end of a 500k-entry readback).
 */
export async function statLevel(pool: DebugfsPool, inodes: number[], pathOf: PathOf, take: (stats: InodeStat[]) => Promise<void>): Promise<void> {
  await settleAll(chunks(inodes, SESSION_BATCH).map((part) => statInodes(pool, part, pathOf).then(take)));
}

export function chunks<T>(items: T[], size: number): T[][] {
  const n = Math.ceil(items.length / size);
  const per = Math.ceil(items.length / Math.max(1, n));
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += per) out.push(items.slice(i, i + per));
  return out;
}

// ls and stat run with stderr merged into stdout: an error lands in the
// section of the command that caused it, so it can name the path. The
// sections come in the order of the commands, one per prompt.

async function listDirs(pool: DebugfsPool, dirs: Node[]): Promise<Map<number, LsSection>> {
  const sections = parseLsPSections(await pool.run(dirs.map((d) => `ls -p <${d.ino}>`), true));
  const out = new Map<number, LsSection>();
  dirs.forEach((dir, i) => {
    const section = sections[i];
    if (!section || section.errors.length > 0) {
      throw new Damage(`cannot list directory ${dir.path} (inode ${dir.ino}): ${firstError(section?.errors)}`);
    }
    out.set(dir.ino, section);
  });
  if (sections.length !== dirs.length) throw outOfStep(sections.length, dirs.length, 'listings', 'directories');
  return out;
}

async function statInodes(pool: DebugfsPool, inos: number[], pathOf: PathOf): Promise<InodeStat[]> {
  const sections = parseStatSections(await pool.run(inos.map((ino) => `stat <${ino}>`)));
  const stats = inos.map((ino, i) => {
    const s = sections[i];
    if (!s?.stat || s.stat.inode !== ino || s.errors.length > 0) {
      throw new Damage(`cannot read inode ${ino} (${pathOf.get(ino) ?? 'path unknown'}): ${firstError(s?.errors)}`);
    }
    return s.stat;
  });
  if (sections.length !== inos.length) throw outOfStep(sections.length, inos.length, 'stats', 'inodes');
  return stats;
}

/** debugfs answered more commands than it was given: a prompt where none can be (printed from a damaged inode). */
function outOfStep(got: number, want: number, what: string, of: string): Damage {
  return new Damage(`debugfs printed ${got} ${what} for ${want} ${of}: its output is out of step`);
}

/**
 * debugfs's first words on what went wrong, without the command-name prefix
 * it adds ("ls: ", "-p: " after getopt, "stat: "). After the first error a
 * section holds whatever debugfs printed anyway (the rest of a half-read
 * inode), which says nothing more.
 */
function firstError(errors: string[] | undefined): string {
  const lines = (errors ?? []).map((e) => e.replace(/^(?:-\w|[a-z_]+): /, '').trim()).filter((e) => e !== '');
  return lines[0] ?? 'debugfs printed nothing for it';
}

/** debugfs exits 0 whatever happens; anything on stderr is a failure of the read. */
export function failOnErrors(res: DebugfsResult, what: string): void {
  const lines = res.stderr.split('\n').filter((l) => l.trim() !== '');
  if (lines.length > 0) throw new Damage(`debugfs could not ${what}: ${firstError(lines)}`);
}

// ---------------------------------------------------------------------------
// xattr values stat does not print (40 bytes and more)

/** An xattr whose value `stat` left out (40 bytes and more): fillLongXattrs() reads it. */
export function isLongXattr(name: string, value: Buffer | null): boolean {
  return value === null && name !== 'system.data';
}

/** Whether `st` has xattr values that fillLongXattrs() must read. */
export function hasLongXattrs(st: InodeStat): boolean {
  for (const [name, value] of st.xattrs) if (isLongXattr(name, value)) return true;
  return false;
}

export async function fillLongXattrs(image: string, stats: Map<number, InodeStat>): Promise<void> {
  const wanted: { st: InodeStat; name: string; cmd: string }[] = [];
  for (const st of stats.values()) {
    for (const [name, value] of st.xattrs) {
      if (!isLongXattr(name, value)) continue;
      wanted.push({ st, name, cmd: `ea_get -r -x <${st.inode}> ${quoteDebugfsArg(name)}` });
    }
  }
  for (const part of chunks(wanted, BATCH)) {
    const cmds = part.map((w) => w.cmd);
    const res = await inSlot(() => runDebugfs(image, cmds));
    failOnErrors(res, 'read extended attributes');
    const sections = splitDebugfsOutput(res.raw, cmds);
    part.forEach((w, i) => {
      const got = parseEaGetHex(sections[i].output);
      const length = w.st.xattrLengths.get(w.name);
      if (!got || got.value.length !== length) {
        throw new Damage(`cannot read xattr ${w.name} of inode ${w.st.inode}: ${sections[i].output.trim() || 'debugfs printed nothing for it'}`);
      }
      w.st.xattrs.set(w.name, got.value);
    });
  }
}

export function manifestXattrs(st: InodeStat, path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of st.xattrs) {
    if (name === 'system.data') continue; // the inline-data area, not a user-visible xattr
    if (value === null) throw new Error(`xattr ${name} of ${path} was not read`);
    out[name] = (isAclXattr(name) ? aclDiskToXattr(value) : value).toString('hex');
  }
  return out;
}
