// fsck stage: the superblock checked the way the kernel checks it at mount,
// then e2fsck -fn. A non-zero status fails; so does any message e2fsck prints
// with status 0 unless tools/e2fsck.ts HARMLESS lists it.
//
// Finding codes: truncated (the file is shorter than block count × block
// size), superblock, superblock-checksum, features, journal, superblock-state
// (image/superblock.ts), fsck-status (e2fsck's exit status), fsck (one per
// e2fsck message).
import { e2fsck } from '../tools/e2fsck.js';
import { readExt4Superblock, superblockProblems, superblockWarnings } from '../image/superblock.js';
import type { Finding } from '../types.js';
import type { Stage } from './context.js';
import { NO_OPTIONS } from './options.js';

export const fsckStage: Stage = {
  name: 'fsck',
  tools: ['e2fsck'],
  runs: 'rootless',
  options: NO_OPTIONS,
  summary: 'the superblock as the kernel checks it (size, checksum, features), then e2fsck -fn: forced read-only filesystem check',
  async run(ctx) {
    const findings: Finding[] = [];
    // Checked directly, not through e2fsck's words: e2fsck -n only warns about a
    // truncated file and exits 0.
    const sb = await readExt4Superblock(ctx.image);
    if (sb.superblock) {
      for (const p of [...superblockProblems(sb.superblock, sb.fileSize), ...superblockWarnings(sb.superblock)]) findings.push({ ...p });
    } else {
      findings.push({ code: 'superblock', message: `no usable superblock: ${sb.notExt4}` });
    }
    const r = await e2fsck(ctx.image);
    const harmless = r.messages.filter((m) => m.harmless).map((m) => ({ message: m.text, reason: m.harmless }));
    const details = { exitCode: r.exitCode, meaning: r.meaning, summary: r.summary, ...(harmless.length ? { harmless } : {}) };
    if (r.exitCode !== 0) {
      findings.push({ code: 'fsck-status', message: `e2fsck -fn exited ${r.exitCode} (${r.meaning.join(', ')})`, actual: r.exitCode, expected: 0 });
    }
    for (const text of r.problems) findings.push({ code: 'fsck', message: text });
    if (r.exitCode !== 0 && r.problems.length === 0) {
      findings.push({ code: 'fsck', message: `e2fsck exited ${r.exitCode} (${r.meaning.join(', ')}) and printed no message` });
    }
    return { status: findings.length ? 'failed' : 'passed', findings, details };
  },
};
