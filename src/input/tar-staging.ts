// Where a tar's file contents wait for the build: one host file per file
// (debugfs `write` copies a whole host file). Small files go to a folder in
// RAM (/dev/shm, a tmpfs) while a budget lasts, the rest to the staging
// folder in TMPDIR. Making, reading and unlinking 100,000 small files on a
// disk filesystem is most of a tar read's cost above hashing, and removing
// them after the verdict took 8-11 s; on tmpfs it is a fraction.
//
// The budget is the smaller of a quarter of the memory available and half
// of what the tmpfs has free, measured once per read; PART_IMAGE_RAM_STAGING_MB
// sets it (0: everything on disk). A tmpfs that fills up anyway (ENOSPC: some
// other program took the room) sends this and every later file to disk.
//
// The small files in RAM are made by a worker thread (stage-writer.ts), off
// the main thread that parses and hashes the archive; a file's bytes are
// known to be in place once settled() or drain() has returned.
import { writeFileSync } from 'node:fs';
import { mkdir, stat, statfs, unlink } from 'node:fs/promises';
import { freemem } from 'node:os';
import { join } from 'node:path';
import type { Scope } from '../cleanup.js';
import type { StagingCounts } from '../types.js';
import { UsageError } from '../errors.js';
import { SmallFileWriter, type HashTarget } from './stage-writer.js';

/** The tmpfs of POSIX shared memory, on every Linux with systemd or udev. */
export const RAM_PARENT = '/dev/shm';
const TMPFS_MAGIC = 0x01021994;
const MiB = 1024 * 1024;

/** The RAM budget in bytes from PART_IMAGE_RAM_STAGING_MB, or undefined when it is not set. Pure. */
export function ramBudgetFromEnv(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  if (!/^\d+$/.test(value)) {
    throw new UsageError(
      `PART_IMAGE_RAM_STAGING_MB must be a whole number of MiB (0 keeps the staged files on disk), not ${JSON.stringify(value)}`,
      'Set it to a whole number such as 512, or 0, or unset it for the default (a quarter of the memory available).',
    );
  }
  return Number(value) * MiB;
}

/** The default budget: a quarter of the memory available, at most half of the tmpfs's free room. Pure. */
export function defaultRamBudget(memAvailable: number, tmpfsFree: number): number {
  return Math.max(0, Math.floor(Math.min(memAvailable / 4, tmpfsFree / 2)));
}

export class TarStaging {
  private count = 0;
  private ramLeft: number;
  readonly counts: StagingCounts = { ramFiles: 0, ramBytes: 0, diskFiles: 0 };
  /** Files the worker wrote to disk instead (the tmpfs was full): RAM path -> disk path. */
  private readonly moved = new Map<string, string>();
  private readonly writer: SmallFileWriter | undefined;

  private constructor(
    /** The folder in TMPDIR (blobs/ holds its files). */
    readonly disk: string,
    /** The folder in RAM, when there is one. */
    readonly ramDir: string | undefined,
    budget: number,
  ) {
    this.ramLeft = budget;
    this.writer = ramDir ? new SmallFileWriter((path, fallback, bytes) => this.movedToDisk(path, fallback, bytes)) : undefined;
  }

  static async open(scope: Scope, o: { env?: Record<string, string | undefined>; ramParent?: string } = {}): Promise<TarStaging> {
    const ramParent = o.ramParent ?? RAM_PARENT;
    const budget = await ramBudget(o.env ?? process.env, ramParent);
    const disk = await scope.tempDir('part-image-tar-');
    await mkdir(join(disk, 'blobs'));
    // Its own folder, removed with the scope like the disk one (and by stale.ts after a kill).
    const ram = budget > 0 ? await scope.tempDir('part-image-tar-', ramParent).catch(() => undefined) : undefined;
    const staging = new TarStaging(disk, ram, ram ? budget : 0);
    // Run before the folders above are removed (a scope runs its disposers last first): no file is made in them after.
    scope.defer('stop the staging writer', () => staging.settle());
    return staging;
  }

  /** A new path on disk, for a file written in pieces (large or sparse). */
  diskPath(): string {
    this.counts.diskFiles++;
    return join(this.disk, 'blobs', String(this.count++));
  }

  /**
   * Stages a small file's bytes: in RAM while the budget lasts (made by the
   * writer thread: see settled()), else on disk at once. Returns its path;
   * final() names the file once the writes are drained. `hashed` is true
   * when the writer thread puts the file's SHA-256 into `hashTo` (by the
   * time drain() returns); else the caller hashes it.
   */
  writeSmall(buf: Buffer, hashTo?: HashTarget): { path: string; hashed: boolean } {
    if (this.writer && buf.length <= this.ramLeft) {
      const n = this.count++;
      const path = join(this.ramDir!, String(n));
      this.writer.write(path, join(this.disk, 'blobs', `ram-${n}`), buf, hashTo);
      this.ramLeft -= buf.length;
      this.counts.ramFiles++;
      this.counts.ramBytes += buf.length;
      return { path, hashed: hashTo !== undefined };
    }
    const path = this.diskPath();
    writeFileSync(path, buf);
    return { path, hashed: false };
  }

  /** A promise while the writer thread has enough to do: the reader waits for it before it goes on. */
  room(): Promise<void> | undefined {
    return this.writer?.room();
  }

  /** Settles once the file `path` is in place. */
  async settled(path: string): Promise<void> {
    await this.writer?.settled(path);
  }

  /** Waits until every file is in place; throws the first failure of the writer thread. */
  async drain(): Promise<void> {
    await this.writer?.drain();
  }

  /** Waits for the writer thread, failed or not, and ends it. */
  async settle(): Promise<void> {
    await this.writer?.settle();
  }

  /** Where the file staged as `path` is (on disk, when the tmpfs was full), once drained. */
  final(path: string): string {
    return this.moved.get(path) ?? path;
  }

  private movedToDisk(path: string, fallback: string, bytes: number): void {
    // The tmpfs is full (another program's files): disk from now on.
    this.ramLeft = 0;
    this.moved.set(path, fallback);
    this.counts.ramFiles--;
    this.counts.ramBytes -= bytes;
    this.counts.diskFiles++;
  }

  /** Removes a staged file that a later member replaced; its RAM comes back to the budget. */
  async drop(staged: string): Promise<void> {
    await this.settled(staged);
    const path = this.final(staged);
    this.moved.delete(staged);
    const inRam = this.ramDir !== undefined && path.startsWith(`${this.ramDir}/`);
    const size = inRam ? await stat(path).then((st) => st.size, () => 0) : 0;
    await unlink(path).catch(() => undefined);
    if (inRam) {
      this.ramLeft += size;
      this.counts.ramFiles--;
      this.counts.ramBytes -= size;
    } else {
      this.counts.diskFiles--;
    }
  }
}

async function ramBudget(env: Record<string, string | undefined>, parent: string): Promise<number> {
  const set = ramBudgetFromEnv(env.PART_IMAGE_RAM_STAGING_MB);
  if (set === 0) return 0;
  const fs = await statfs(parent).catch(() => undefined);
  if (!fs || fs.type !== TMPFS_MAGIC) return 0;
  if (!(await stat(parent).then((s) => s.isDirectory(), () => false))) return 0;
  const free = fs.bavail * fs.bsize;
  return set !== undefined ? Math.min(set, free) : defaultRamBudget(freemem(), free);
}
