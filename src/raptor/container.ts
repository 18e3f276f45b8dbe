// Builder-container mode: part-image run as the Raptor builder itself: the
// container's mounts and the in-place copy onto the output file mount (the
// build itself is orchestrated in commands/builder-container.ts). The
// seed builder's container has two mounts, `input` (the target's merged
// overlay) at /input and `output` (a file) at /output/disk.img; inside such a
// container `part-image build` with neither --input nor --output uses them.
// PART_IMAGE_BUILDER_ROOT=DIR looks for DIR/input and DIR/output/disk.img
// instead, so that the mode can be used (and tested) without owning /input.
//
// Raptor bind-mounts the output file, and rename(2) onto a mount point fails
// with EBUSY: the image is built and verified in a staging folder, and only
// an accepted image is then copied into the mounted file (holes kept). That
// copy checks first that the image fits (the old content stays when it does
// not), and truncates the output to 0 bytes when it does not finish (an error,
// SIGINT/SIGTERM): a partial image never stays at the output path.
import { open, stat, statfs, truncate } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isShuttingDown, type Scope } from '../cleanup.js';
import { EnvironmentError, UsageError } from '../errors.js';
import { log } from '../log.js';

export const BUILDER_ROOT_ENV = 'PART_IMAGE_BUILDER_ROOT';
/** A folder for rejected images and their reports: the container's root is thrown away with it. */
export const REJECTED_DIR_ENV = 'PART_IMAGE_REJECTED_DIR';

export interface BuilderMounts {
  /** The input mount: a directory. */
  input: string;
  /** The output mount: the image file. */
  output: string;
}

const isDir = (p: string): Promise<boolean> => stat(p).then((s) => s.isDirectory(), () => false);

export function builderMountPaths(env: NodeJS.ProcessEnv): BuilderMounts {
  const root = env[BUILDER_ROOT_ENV] || '/';
  return { input: join(root, 'input'), output: join(root, 'output', 'disk.img') };
}

/**
 * The mounts, when this looks like a Raptor builder container: the input is a
 * directory and the output's folder exists (Raptor creates the file itself).
 * With PART_IMAGE_BUILDER_ROOT set, missing mounts are an error, not a no.
 */
export async function detectBuilderMounts(env: NodeJS.ProcessEnv): Promise<BuilderMounts | undefined> {
  const m = builderMountPaths(env);
  const [inputOk, outputOk] = await Promise.all([isDir(m.input), isDir(dirname(m.output))]);
  if (inputOk && outputOk && !(await isDir(m.output))) return m;
  if (env[BUILDER_ROOT_ENV]) {
    const root = env[BUILDER_ROOT_ENV];
    const what = !inputOk ? `${m.input} is not a directory` : `${dirname(m.output)} is not a directory`;
    throw new UsageError(`${BUILDER_ROOT_ENV}=${root}, but ${what}`,
      `Put the root tree in ${m.input} and create ${dirname(m.output)}/ (the image goes to ${m.output}), or unset ${BUILDER_ROOT_ENV}.`);
  }
  return undefined;
}

export interface BuildPaths {
  input: string;
  output: string;
  /** Set when the output is the builder container's output mount. */
  mounts?: BuilderMounts;
}

export const CONTAINER_HINT =
  'Inside a Raptor builder container (mounts /input and /output/disk.img) both may be left out; ' +
  `${BUILDER_ROOT_ENV}=DIR uses DIR/input and DIR/output/disk.img (docs/raptor.md).`;

/** --input and --output, or the builder container's mounts for the ones not given. */
export async function resolveBuildPaths(input: unknown, output: unknown, env: NodeJS.ProcessEnv): Promise<BuildPaths> {
  const inp = typeof input === 'string' ? input : undefined;
  const out = typeof output === 'string' ? output : undefined;
  if (inp !== undefined && out !== undefined) return { input: inp, output: out };
  const mounts = await detectBuilderMounts(env);
  if (!mounts) {
    if (inp === undefined) throw new UsageError('build needs --input PATH', `Give a directory, a tar archive or a Raptor layer stack. ${CONTAINER_HINT}`);
    throw new UsageError('build needs --output FILE', `Give the path of the image to write. ${CONTAINER_HINT}`);
  }
  const paths = { input: inp ?? mounts.input, output: out ?? mounts.output };
  log.info(`builder-container mode: input ${paths.input}, output ${paths.output}`);
  return out === undefined ? { ...paths, mounts } : paths;
}

const CHUNK = 1 << 20;
/** Holes are kept at this granularity: the copy never allocates a block the source has as zeros. */
const BLOCK = 4096;
const ZERO = Buffer.alloc(CHUNK);
const MiB = 1024 * 1024;

export interface CopyOptions {
  /** Checked before every chunk: true stops the copy with an error (an interrupt). */
  shouldStop?: () => boolean;
  /** Called once `dest` has been opened and truncated: from then on its old content is gone. */
  onTruncated?: () => void;
}

/** Copies `src` over `dest` in place (truncating it, never renaming onto it), leaving all-zero 4 KiB blocks as holes. */
export async function copyInPlace(src: string, dest: string, opts: CopyOptions = {}): Promise<void> {
  const from = await open(src, 'r');
  try {
    const to = await open(dest, 'w');
    opts.onTruncated?.();
    try {
      const size = (await from.stat()).size;
      const buf = Buffer.alloc(CHUNK);
      for (let pos = 0; pos < size;) {
        if (opts.shouldStop?.()) throw new Error('the copy was stopped: part-image is shutting down');
        const { bytesRead } = await from.read(buf, 0, CHUNK, pos);
        if (bytesRead === 0) break;
        // Write each run of non-zero blocks; skip the all-zero ones.
        for (let off = 0; off < bytesRead;) {
          const isZero = (o: number) => buf.subarray(o, Math.min(o + BLOCK, bytesRead)).equals(ZERO.subarray(0, Math.min(BLOCK, bytesRead - o)));
          if (isZero(off)) {
            off += BLOCK;
            continue;
          }
          let end = off + BLOCK;
          while (end < bytesRead && !isZero(end)) end += BLOCK;
          end = Math.min(end, bytesRead);
          for (let done = off; done < end;) {
            const { bytesWritten } = await to.write(buf, done, end - done, pos + done);
            done += bytesWritten;
          }
          off = end;
        }
        pos += bytesRead;
      }
      await to.truncate(size);
      await to.sync();
    } finally {
      await to.close();
    }
  } finally {
    await from.close();
  }
}

const mib = (bytes: number) => (bytes / MiB).toFixed(1);

/**
 * Refuses (EnvironmentError, exit 3) a copy of `src` onto `dest` that cannot
 * fit, before `dest` is truncated. What the copy needs is at most what `src`
 * has allocated (zero blocks stay holes); what it gets is the free space of
 * dest's filesystem as an unprivileged user sees it, plus the blocks dest's
 * old content frees when it is truncated.
 */
export async function checkRoomFor(src: string, dest: string): Promise<void> {
  const s = await stat(src);
  const needed = Math.min(s.blocks * 512, Math.ceil(s.size / BLOCK) * BLOCK);
  const old = await stat(dest).catch(() => undefined);
  const fs = await statfs(old ? dest : dirname(dest));
  const free = fs.bavail * fs.bsize + (old?.isFile() ? old.blocks * 512 : 0);
  if (needed > free) {
    throw new EnvironmentError(
      `no room for the accepted image on the output's filesystem: it needs ${mib(needed)} MiB, ${dest} can get ${mib(free)} MiB; the output was left as it was`,
      `Free space where ${dest} lives (statfs: ${mib(fs.bavail * fs.bsize)} MiB available), or make the image smaller (SIZE_MB, FREE_MB, OUTPUT_FORMAT=qcow2).`,
    );
  }
}

/**
 * Copies the accepted image `src` onto `dest` in place, such that no partial
 * image is ever left at `dest`: the copy is refused before anything is
 * touched when it cannot fit, and a copy that does not finish (an error, or
 * SIGINT/SIGTERM closing `scope`) truncates `dest` to 0 bytes.
 */
export async function copyAcceptedImage(scope: Scope, src: string, dest: string): Promise<void> {
  await checkRoomFor(src, dest);
  let truncated = false;
  let finished = false;
  let stop = false;
  let copying: Promise<void> | undefined;
  scope.defer(`truncate the unfinished copy at ${dest}`, async () => {
    // On an interrupt the copy is still running: stop it and let it settle
    // first, or a write in flight could land after the truncate.
    stop = true;
    await copying?.catch(() => undefined);
    if (finished || !truncated) return;
    await truncate(dest, 0);
    log.warn(`${dest}: the output was truncated: the copy of the accepted image did not finish`);
  });
  copying = copyInPlace(src, dest, {
    shouldStop: () => stop || isShuttingDown(),
    onTruncated: () => {
      truncated = true;
    },
  }).then(() => {
    finished = true;
  });
  try {
    await copying;
  } catch (err) {
    if (isShuttingDown()) throw err;
    throw new EnvironmentError(
      `cannot copy the accepted image to ${dest}: ${(err as Error).message}`,
      `The image was built and accepted, but could not be written to ${dest}; check that file and the space on its filesystem.`,
      err,
    );
  }
}
