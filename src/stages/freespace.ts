// freespace stage: reports the free MiB; below FREE_MB is a finding when the size was not fixed.
import { readSuperblock } from '../tools/dumpe2fs.js';
import type { Stage } from './context.js';

export const freespaceStage: Stage = {
  name: 'freespace',
  tools: ['dumpe2fs'],
  runs: 'rootless',
  // Whole MiB, as FREE_MB is (README: 0 to 16777215).
  options: { type: 'object', properties: { requiredFreeMb: { type: 'integer', minimum: 0, maximum: 16777215 } }, additionalProperties: false },
  summary: 'free space left in the filesystem, against FREE_MB',
  async run(ctx) {
    const sb = await readSuperblock(ctx.image);
    const freeMb = Math.floor(((sb.freeBlocks * sb.blockSize) / 1048576) * 10) / 10;
    const sizeMb = (sb.blockCount * sb.blockSize) / 1048576;
    const details = { freeMb, sizeMb, freeInodes: sb.freeInodes, requiredFreeMb: ctx.opts.requiredFreeMb };
    const need = ctx.opts.requiredFreeMb;
    if (need !== undefined && freeMb < need) {
      return {
        status: 'failed', details,
        findings: [{ code: 'free-space', message: `only ${freeMb} MiB free, FREE_MB asks for ${need} MiB`, field: 'freeMb', expected: need, actual: freeMb }],
      };
    }
    return { status: 'passed', findings: [], details };
  },
};
