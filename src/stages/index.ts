// Every verification stage, in the order they run. A newcomer finds each
// stage's module here in one look.
import type { Stage, StageDeclaration } from './context.js';
import { fsckStage } from './fsck.js';
import { readbackStage } from './readback.js';
import { diffStage } from './diff.js';
import { freespaceStage } from './freespace.js';
import { goldenStage } from './golden.js';
import { reproducibleStage } from './reproducible.js';
import { diagnoseStage } from './diagnose.js';
import { nspawnStage } from './nspawn.js';
import { portableLintStage } from './portable-lint.js';
import { portableStage } from './portable.js';

/** Stages of `build` and `verify`. */
export const VERIFY_STAGES: readonly Stage[] = [
  fsckStage, readbackStage, diffStage, goldenStage, freespaceStage,
  // Boot: the rootless diagnosis first (it reuses the readback manifest), then the boots.
  diagnoseStage, nspawnStage, portableLintStage, portableStage,
  // Last: a second build, compared byte for byte (--check-reproducible).
  reproducibleStage,
];

/** Stages of `boot`: the diagnosis and the boots, nothing else. */
export const BOOT_STAGES: readonly Stage[] = [diagnoseStage, nspawnStage, portableLintStage, portableStage];

export const ALL_STAGE_NAMES: readonly string[] = VERIFY_STAGES.map((s) => s.name);

/**
 * Every step of `build`, in pipeline order, as it declares itself: reading
 * the input and building the image (pipeline.ts runs them), the verification
 * stages, then the conversion. Doctor checks what these declare.
 */
export const PIPELINE_STEPS: readonly StageDeclaration[] = [
  { name: 'read', summary: 'read the input tree (directory, tar or layers), with its xattrs', tools: ['getfattr'], runs: 'rootless' },
  { name: 'build', summary: 'mke2fs and one debugfs script', tools: ['mke2fs', 'debugfs', 'dumpe2fs'], runs: 'rootless' },
  ...VERIFY_STAGES,
  { name: 'convert', summary: 'convert the raw image to qcow2 or vmdk (--format)', tools: ['qemu-img'], runs: 'rootless' },
];
