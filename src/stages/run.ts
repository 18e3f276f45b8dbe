// Runs stages in order, times them, honours --skip, and turns a stage that
// cannot run here into `skipped (unavailable)` instead of a crash.
import type { StageResult } from '../types.js';
import { EnvironmentError, InterruptedError, PartImageError } from '../errors.js';
import { checkNotInterrupted, isShuttingDown } from '../cleanup.js';
import { log } from '../log.js';
import type { Stage, StageContext, StageOutcome } from './context.js';
import { UnreadableImageError } from '../image/debugfs-reader.js';
import { unreadableOutcome } from './readback.js';

export async function runStages(stages: readonly Stage[], ctx: StageContext): Promise<StageResult[]> {
  const results: StageResult[] = [];
  for (const stage of stages) {
    checkNotInterrupted();
    const start = performance.now();
    let outcome: StageOutcome;
    if (ctx.opts.skip.has(stage.name)) {
      outcome = { status: 'skipped', skippedBy: 'request', reason: '--skip', findings: [] };
    } else {
      try {
        outcome = await log.step(stage.name, () => stage.run(ctx));
      } catch (err) {
        if (isShuttingDown()) throw new InterruptedError('signal');
        // An image debugfs cannot read is a verdict on the image (stages/readback.ts).
        if (err instanceof UnreadableImageError) outcome = unreadableOutcome(err);
        else outcome = outcomeOfError(err);
      }
    }
    const result: StageResult = { name: stage.name, ...outcome, durationMs: Math.round(performance.now() - start) };
    results.push(result);
  }
  return results;
}

function outcomeOfError(err: unknown): StageOutcome {
  if (err instanceof EnvironmentError) {
    return { status: 'skipped', skippedBy: 'unavailable', reason: `${err.message}${err.hint ? ` (${err.hint})` : ''}`, findings: [] };
  }
  const message = err instanceof PartImageError || err instanceof Error ? err.message : String(err);
  // A tool that chokes on the image (debugfs on corrupt metadata, say) is a
  // verdict on the image, not a crash of part-image.
  return { status: 'failed', findings: [{ code: 'stage-error', message }] };
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
