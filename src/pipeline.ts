// The pipeline of design.md: read -> build -> verify -> accept.
// Only an image that passes every stage reaches the output path.
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { rename, rm, stat } from 'node:fs/promises';
import type { InputTree, Report, StageResult } from './types.js';
import { checkNotInterrupted, isShuttingDown, withScope, type Scope } from './cleanup.js';
import { besideOutputName, sweepStale } from './stale.js';
import { EnvironmentError, InputError, InternalError, InterruptedError, PartImageError, UsageError, asPartImageError, errorKind } from './errors.js';
import { hasTool } from './exec.js';
import { readInput } from './input/index.js';
import { RAM_PARENT } from './input/tar-staging.js';
import { buildRawImage, manifestUsedMb } from './build/index.js';
import { onDiskMb, resolveSizeInputs } from './build/size.js';
import { checkRoom, checkWritableFolder } from './build/output-folder.js';
import { checkLabel } from './tools/mke2fs.js';
import { runStages, isAccepted, exitCodeFor } from './stages/run.js';
import { VERIFY_STAGES } from './stages/index.js';
import type { Stage, VerifyOptions } from './stages/context.js';
import { convertImage, type OutputFormat } from './build/convert.js';
import { log } from './log.js';
import { collectGarbage } from './memory.js';
import { sniffFile } from './source/load.js';
import { openImage, refuseUnreadable } from './image/open.js';
import { readExt4Superblock } from './image/superblock.js';
import { VERSION } from './version.js';
import { primaryCause } from './boot/cause.js';

export interface BuildRequest {
  input: string;
  output: string;
  format: OutputFormat;
  label: string;
  sizeMb?: string;
  freeMb?: string;
  usedMb?: string;
  seed?: string;
  target?: string;
  verify: VerifyOptions;
  /** The environment for SIZE_MB / FREE_MB / USED_MB / SOURCE_DATE_EPOCH. */
  env: NodeJS.ProcessEnv;
}

export interface PipelineResult {
  report: Report;
  exitCode: number;
}

function newReport(command: string): Report {
  return { tool: 'part-image', version: VERSION, command, accepted: false, startedAt: new Date().toISOString(), durationMs: 0, stages: [] };
}

/**
 * A pipeline step outside the verification stages (read, build), recorded in
 * the report even when it throws: `failed` for bad input or a host problem,
 * `error` for a bug in part-image.
 */
async function timed<T>(results: StageResult[], name: string, fn: () => Promise<{ value: T; details?: Record<string, unknown> }>): Promise<T> {
  const start = performance.now();
  try {
    const { value, details } = await log.step(name, fn);
    results.push({ name, status: 'passed', durationMs: Math.round(performance.now() - start), findings: [], details });
    log.stageDone(results[results.length - 1]);
    return value;
  } catch (raw) {
    const err = asPartImageError(raw, name);
    const durationMs = Math.round(performance.now() - start);
    if (err instanceof InternalError || err instanceof InterruptedError) {
      results.push({ name, status: 'error', reason: err.message, durationMs, findings: [] });
    } else {
      results.push({ name, status: 'failed', durationMs, findings: [{ code: 'error', message: err.message + (err.hint ? ` (${err.hint})` : '') }] });
    }
    log.stageDone(results[results.length - 1]);
    throw err;
  }
}

/**
 * Runs `fn`; an error that stops it leaves with the report of what ran until
 * then, which the CLI still writes (--report-json, --junit) for CI. Anything
 * that is not one of part-image's errors is a bug (exit 4).
 */
async function reportingErrors<T>(report: Report, t0: number, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (raw) {
    const err = asPartImageError(raw);
    report.durationMs = Math.round(performance.now() - t0);
    report.accepted = false;
    report.error = {
      kind: errorKind(err), exitCode: err.exitCode, message: err.message,
      ...(err.hint ? { hint: err.hint } : {}),
      ...(err instanceof InternalError && err.stage ? { stage: err.stage } : {}),
      ...(err instanceof InternalError && err.where ? { where: err.where } : {}),
    };
    (err as PartImageError & { report?: Report }).report = report;
    throw err;
  }
}

/** Checks a build request before any work: every bad flag fails in the first second, not after a long read. */
async function checkBuildRequest(req: BuildRequest, output: string): Promise<void> {
  resolveSizeInputs(req, req.env, 0);
  parseSourceDateEpoch(req.env);
  const outStat = await stat(output).catch(() => undefined);
  if (outStat?.isDirectory()) throw new UsageError(`--output ${req.output} is a directory`, 'Give the path of the image file to write.');
  if (!(await stat(dirname(output)).catch(() => undefined))?.isDirectory()) {
    throw new UsageError(`the folder of --output does not exist: ${dirname(output)}`, 'Create it first.');
  }
  // Named like the temporary image (with a .probe suffix): a run killed in between leaves nothing a later one keeps.
  await checkWritableFolder(dirname(output), `${besideOutputName(basename(output))}.probe`);
  checkLabel(req.label);
  const input = resolve(req.input);
  if ((await stat(input).catch(() => undefined))?.isDirectory() && `${dirname(output)}/`.startsWith(`${input}/`)) {
    throw new UsageError(`--output ${req.output} is inside the input tree ${req.input}`,
      'Write the image outside the tree: it (and its temporary files) would end up in the next image.');
  }
  if (req.format !== 'raw' && !(await hasTool('qemu-img'))) {
    throw new EnvironmentError(`tool missing: qemu-img (needed for --format ${req.format})`, 'Install it: apt-get install qemu-utils');
  }
}

/** The one line a person reads first when an image is rejected: boot causes rank first (boot/cause.ts). */
function causeOf(results: readonly StageResult[]): string | undefined {
  return primaryCause(results.filter((r) => r.status === 'failed').flatMap((r) => r.findings));
}

/** The read stage's notes (leading "/" removed, a later member won, sockets left out), when there are any. */
function notesOf(t: InputTree): Pick<InputTree, 'notes' | 'staged'> {
  return { ...(t.notes?.length ? { notes: t.notes } : {}), ...(t.staged ? { staged: t.staged } : {}) };
}

export function parseSourceDateEpoch(env: NodeJS.ProcessEnv): number | undefined {
  const v = env.SOURCE_DATE_EPOCH;
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`SOURCE_DATE_EPOCH must be whole seconds since 1970, got "${v}"`);
  return Number(v);
}

export async function buildImage(req: BuildRequest, stages: readonly Stage[] = VERIFY_STAGES): Promise<PipelineResult> {
  const t0 = performance.now();
  const report = newReport('build');
  const output = resolve(req.output);
  report.input = req.input;
  report.output = output;
  await checkBuildRequest(req, output);
  const sourceDateEpoch = parseSourceDateEpoch(req.env);
  // SIZE_MB lets the reader refuse a tree too large for it before hashing it (a sparse tar bomb).
  const exactSizeMb = resolveSizeInputs(req, req.env, 0).sizeMb;
  // What killed runs left in TMPDIR, in RAM (a tar's staged small files) and beside the output goes first, in one line.
  await sweepStale([tmpdir(), RAM_PARENT, dirname(output)]);

  return withScope((scope) => reportingErrors(report, t0, async () => {
    const tree = await timed(report.stages, 'read', async () => {
      const t = await readInput(req.input, scope, { target: req.target, sizeMb: exactSizeMb });
      return { value: t, details: { kind: t.kind, entries: t.manifest.entries.length, usedMb: t.usedMb, summary: `${t.kind}, ${t.manifest.entries.length} entries, ${t.usedMb} MiB`, ...notesOf(t) } };
    });
    // What reading made and dropped goes before the build, which takes as long as the read.
    collectGarbage();
    // Seeded builds size from the manifest: du -sm differs between staging filesystems.
    const size = resolveSizeInputs(req, req.env, req.seed ? manifestUsedMb(tree.manifest) : tree.usedMb);
    // The raw image is sparse: only the tree, metadata and journal take room (twice, to convert it).
    await checkRoom(dirname(output), onDiskMb(size.usedMb, size.freeMb) * (req.format === 'raw' ? 1 : 2));
    // Named for its owner (pid, start time): a later run removes it if this one is killed.
    const tmp = join(dirname(output), besideOutputName(basename(output)));
    scope.defer(`remove ${tmp}`, () => rm(tmp, { force: true }));
    const built = await timed(report.stages, 'build', async () => {
      const r = await buildRawImage(tree, tmp, { ...size, label: req.label, seed: req.seed, sourceDateEpoch }, scope);
      return { value: r, details: { ...r, summary: `ext4, ${r.sizeMb} MiB${r.exactSize ? ' (SIZE_MB)' : ''}, label ${req.label}` } };
    });
    // Only the build reads the contents: what the map holds (a path each) is let go.
    tree.content.clear();
    collectGarbage();
    const verify = { ...req.verify, requiredFreeMb: built.exactSize ? undefined : size.freeMb };
    // --check-reproducible: the whole build once more, from reading the input on.
    const rebuild = {
      seeded: req.seed !== undefined && sourceDateEpoch !== undefined,
      into: (dest: string) => withScope(async (again) => {
        const t = await readInput(req.input, again, { target: req.target, sizeMb: exactSizeMb });
        const s = resolveSizeInputs(req, req.env, req.seed ? manifestUsedMb(t.manifest) : t.usedMb);
        await buildRawImage(t, dest, { ...s, label: req.label, seed: req.seed, sourceDateEpoch }, again);
      }),
    };
    const onAccepted: (() => Promise<void>)[] = [];
    const results = await runStages(stages, { image: tmp, imageName: basename(output), input: tree, opts: verify, scope, rebuild, onAccepted }, report.stages);
    report.accepted = isAccepted(results);
    report.cause = causeOf(results);
    let exitCode = exitCodeFor(results);
    checkNotInterrupted();
    if (report.accepted) {
      exitCode = await accept(tmp, output, req.format, report, scope);
      if (report.accepted) for (const fn of onAccepted) await fn();
    } else {
      await keepRejected(tmp, output, report);
    }
    report.durationMs = Math.round(performance.now() - t0);
    return { report, exitCode };
  }));
}

/** A rejected image stays beside the output as FILE.rejected; its size is said, since it can be gigabytes. */
async function keepRejected(tmp: string, output: string, report: Report): Promise<void> {
  const kept = `${output}.rejected`;
  await rename(tmp, kept);
  report.image = kept;
  const st = await stat(kept).catch(() => undefined);
  if (st) log.info(`kept the rejected image ${kept}: ${Math.round(st.size / 2 ** 20)} MiB (${Math.round((st.blocks * 512) / 2 ** 20)} MiB on disk); remove it when done`);
}

/** Converts when asked, then renames onto the output path: the only write to it. */
async function accept(tmpRaw: string, output: string, format: OutputFormat, report: Report, scope: Scope): Promise<number> {
  if (format === 'raw') {
    await rename(tmpRaw, output);
    report.image = output;
    return 0;
  }
  const tmpOut = `${tmpRaw}.${format}`;
  scope.defer(`remove ${tmpOut}`, () => rm(tmpOut, { force: true }));
  const start = performance.now();
  let findings;
  try {
    findings = await log.step('convert', () => convertImage(tmpRaw, tmpOut, format));
  } catch (err) {
    // Interrupted: the scope removes both temp files; nothing is left beside the output.
    if (isShuttingDown()) throw err;
    // The verified raw image is kept for the user, but never at the output path.
    report.stages.push({ name: 'convert', status: 'failed', durationMs: Math.round(performance.now() - start),
      findings: [{ code: 'error', message: err instanceof Error ? err.message : String(err) }] });
    report.accepted = false;
    await keepRejected(tmpRaw, output, report);
    throw err;
  }
  const result: StageResult = {
    name: 'convert', status: findings.length ? 'failed' : 'passed', durationMs: Math.round(performance.now() - start), findings,
    details: { summary: `${format}, checked with qemu-img compare` },
  };
  report.stages.push(result);
  log.stageDone(result);
  if (findings.length) {
    report.accepted = false;
    await keepRejected(tmpRaw, output, report);
    return 1;
  }
  await rename(tmpOut, output);
  report.image = output;
  return 0;
}

export interface VerifyRequest {
  image: string;
  input?: string;
  target?: string;
  verify: VerifyOptions;
  /** Refuse (exit 2) an image the kernel would refuse or e2fsck finds damaged, before any stage (boot). */
  requireReadable?: boolean;
}

/** Runs the verification stages on an existing raw image (made by part-image or not). */
export async function verifyImage(req: VerifyRequest, stages: readonly Stage[] = VERIFY_STAGES, command = 'verify'): Promise<PipelineResult> {
  const t0 = performance.now();
  const report = newReport(command);
  report.image = resolve(req.image);
  report.input = req.input;
  const st = await stat(report.image).catch(() => undefined);
  if (!st?.isFile()) throw new InputError(`image not found: ${req.image}`, 'Give the path of an ext4 image file (raw, qcow2 or vmdk).');
  return withScope((scope) => reportingErrors(report, t0, async () => {
    // Every stage works on raw bytes: a qcow2 or vmdk image is verified through a raw copy,
    // made only once nothing in it refers to another file (image/open.ts).
    const kind = await sniffFile(report.image!);
    if (kind !== 'image' && kind !== 'qcow2' && kind !== 'vmdk') {
      const why = (await readExt4Superblock(report.image!)).notExt4 ?? 'no superblock';
      throw new InputError(`not an ext4 image: ${req.image} (${why})`, 'part-image verifies single-filesystem ext4 images (raw, qcow2 or vmdk), with no partition table.');
    }
    const image = await openImage(report.image!, kind, scope);
    // boot mounts and runs the image without fsck and readback stages: refuse a damaged one first.
    if (req.requireReadable) await refuseUnreadable(image, req.image);
    let tree: InputTree | undefined;
    if (req.input) {
      tree = await timed(report.stages, 'read', async () => {
        const t = await readInput(req.input!, scope, { target: req.target });
        return { value: t, details: { kind: t.kind, entries: t.manifest.entries.length, summary: `${t.kind}, ${t.manifest.entries.length} entries`, ...notesOf(t) } };
      });
    }
    const onAccepted: (() => Promise<void>)[] = [];
    const results = await runStages(stages, { image, imageName: basename(report.image!), input: tree, opts: req.verify, scope, onAccepted }, report.stages);
    report.accepted = isAccepted(results);
    report.cause = causeOf(results);
    if (report.accepted) for (const fn of onAccepted) await fn();
    report.durationMs = Math.round(performance.now() - t0);
    return { report, exitCode: exitCodeFor(results) };
  }));
}
