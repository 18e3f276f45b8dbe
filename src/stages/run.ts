// Runs stages in order, times them, honours --skip, and sorts what a stage
// throws by the error hierarchy (errors.ts), so that only findings are ever a
// verdict on the image:
// - EnvironmentError, ToolError: the stage could not run here: `skipped
//   (unavailable)`, which blocks acceptance (exit 3); the next stages run;
// - UnreadableImageError: debugfs cannot read the image: a verdict, the
//   stage fails with an `unreadable` finding;
// - InputError, UsageError: bad input (a malformed golden file, say): the
//   stage is `error` and the run stops with exit 2;
// - anything else is a bug in part-image: the stage is `error` and the run
//   stops with exit 4, saying where.
// Once fsck or the read-back found the filesystem damaged, the stages that
// mount it (nspawn, portable) do not run: it is rejected already.
import type { StageResult } from '../types.js';
import { EnvironmentError, InterruptedError, PartImageError, ToolError, UnreadableImageError, asPartImageError } from '../errors.js';
import { checkNotInterrupted, isShuttingDown } from '../cleanup.js';
import { log } from '../log.js';
import type { Stage, StageContext, StageOutcome } from './context.js';
import { unreadableOutcome } from './readback.js';
import { checkStageOptions } from './options.js';

/**
 * PART_IMAGE_TEST_FAULT=STAGE makes that stage throw a TypeError as a bug
 * would: the tests prove with it that a bug ends as exit 4, never as a verdict.
 */
function injectedFault(stage: string): void {
  if (process.env.PART_IMAGE_TEST_FAULT === stage) {
    throw new TypeError(`injected fault (PART_IMAGE_TEST_FAULT=${stage})`);
  }
}

/** Runs `stages`, appending each result to `results` as it ends (so a run that stops keeps what ran). */
export async function runStages(stages: readonly Stage[], ctx: StageContext, results: StageResult[] = []): Promise<StageResult[]> {
  for (const stage of stages) {
    checkNotInterrupted();
    const start = performance.now();
    let outcome: StageOutcome;
    const damage = stage.runs === 'rootless' ? undefined : damageOf(results);
    if (ctx.opts.skip.has(stage.name)) {
      outcome = { status: 'skipped', skippedBy: 'request', reason: '--skip', findings: [] };
    } else if (damage) {
      // The image is rejected already; mounting a damaged filesystem (nspawn,
      // portabled) would hand it to a kernel as root, for no verdict.
      outcome = { status: 'skipped', skippedBy: 'not-applicable', reason: `not run: the ${damage} stage failed, and a damaged filesystem is never mounted`, findings: [] };
    } else {
      try {
        outcome = await log.step(stage.name, async () => {
          checkStageOptions(stage, ctx.opts);
          injectedFault(stage.name);
          return stage.run(ctx);
        });
      } catch (raw) {
        if (isShuttingDown()) throw new InterruptedError('signal');
        // An image debugfs cannot read is a verdict on the image (stages/readback.ts).
        if (raw instanceof UnreadableImageError) {
          outcome = unreadableOutcome(raw);
        } else {
          const err = asPartImageError(raw, stage.name);
          if (!(err instanceof EnvironmentError || err instanceof ToolError)) {
            results.push({ name: stage.name, status: 'error', reason: err.message, findings: [], durationMs: Math.round(performance.now() - start) });
            log.stageDone(results[results.length - 1]);
            throw err;
          }
          outcome = unavailable(err);
        }
      }
    }
    results.push({ name: stage.name, ...outcome, durationMs: Math.round(performance.now() - start) });
    log.stageDone(results[results.length - 1]);
  }
  return results;
}

/** The stage that found the filesystem itself damaged (fsck, or an unreadable read-back), if one did. */
function damageOf(results: readonly StageResult[]): string | undefined {
  return results.find((r) => (r.name === 'fsck' || r.name === 'readback') && r.status === 'failed')?.name;
}

function unavailable(err: PartImageError): StageOutcome {
  return { status: 'skipped', skippedBy: 'unavailable', reason: `${err.message}${err.hint ? ` (${err.hint})` : ''}`, findings: [] };
}

/** Accepted when every stage passed, or was skipped by request or because it does not apply. */
export function isAccepted(results: readonly StageResult[]): boolean {
  return results.every((r) => r.status === 'passed' || (r.status === 'skipped' && r.skippedBy !== 'unavailable'));
}

/** 0 accepted, 1 a stage failed, 3 nothing failed but a required stage could not run here. */
export function exitCodeFor(results: readonly StageResult[]): number {
  if (results.some((r) => r.status === 'failed')) return 1;
  if (results.some((r) => r.status === 'skipped' && r.skippedBy === 'unavailable')) return 3;
  return 0;
}
