// fsck stage: e2fsck -fn. Any non-zero status fails; e2fsck's lines are the findings.
import { e2fsck } from '../tools/e2fsck.js';
import type { Finding } from '../types.js';
import type { Stage } from './context.js';

export const fsckStage: Stage = {
  name: 'fsck',
  tools: ['e2fsck'],
  runs: 'rootless',
  summary: 'e2fsck -fn: forced read-only filesystem check',
  async run(ctx) {
    const r = await e2fsck(ctx.image);
    const details = { exitCode: r.exitCode, meaning: r.meaning, summary: r.summary };
    if (r.exitCode === 0) return { status: 'passed', findings: [], details };
    const findings: Finding[] = r.problems.length
      ? r.problems.map((line) => ({ code: 'fsck', message: line }))
      : [{ code: 'fsck', message: `e2fsck exited ${r.exitCode}: ${r.meaning.join(', ')}` }];
    findings.unshift({ code: 'fsck-status', message: `e2fsck -fn exited ${r.exitCode} (${r.meaning.join(', ')})`, actual: r.exitCode, expected: 0 });
    return { status: 'failed', findings, details };
  },
};
