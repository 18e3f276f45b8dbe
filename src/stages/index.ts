// Every verification stage, in the order they run. A newcomer finds each
// stage's module here in one look.
import type { Stage } from './context.js';
import { fsckStage } from './fsck.js';
import { readbackStage } from './readback.js';
import { diffStage } from './diff.js';
import { freespaceStage } from './freespace.js';

/** Stages of `build` and `verify`. */
export const VERIFY_STAGES: readonly Stage[] = [fsckStage, readbackStage, diffStage, freespaceStage];

export const ALL_STAGE_NAMES: readonly string[] = VERIFY_STAGES.map((s) => s.name);
