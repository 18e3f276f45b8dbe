// golden stage: the image's manifest against a golden manifest kept in git
// (--golden FILE). --update-golden writes the file, or refreshes it after
// printing what changed. Differences listed in --golden-allow are expected;
// an allow rule that matches nothing fails the stage (stale rule).
import type { Finding } from '../types.js';
import { log } from '../log.js';
import { formatDiffText } from '../manifest/diff-format.js';
import { diffManifests } from '../manifest/diff.js';
import { compareWithGolden, goldenFinding, staleRuleFinding } from '../golden/compare.js';
import { goldenView, readGoldenFile, writeGoldenFile } from '../golden/file.js';
import { readAllowFile, type AllowRule } from '../golden/allow.js';
import { imageManifestOf, passedOrFailed, skipped, type Stage, type StageContext, type StageOutcome } from './context.js';
import { OPTION } from './options.js';

export const goldenStage: Stage = {
  name: 'golden',
  tools: [],
  runs: 'rootless',
  options: {
    type: 'object',
    properties: { golden: { type: 'string' }, updateGolden: { type: 'boolean' }, goldenAllow: { type: 'string' }, compareMtime: OPTION.compareMtime },
    required: ['compareMtime'],
    // --update-golden and --golden-allow work on a golden file.
    if: { properties: { updateGolden: { const: true } }, required: ['updateGolden'] },
    then: { required: ['golden'] },
    dependencies: { goldenAllow: ['golden'] },
    additionalProperties: false,
  },
  summary: 'compare the image with a golden manifest kept in git (--golden FILE, --update-golden, --golden-allow FILE)',
  async run(ctx) {
    const file = ctx.opts.golden;
    if (!file) return skipped('no golden manifest given (use --golden FILE)', 'not-applicable');
    const imageManifest = await imageManifestOf(ctx, { hash: true });
    if (ctx.opts.updateGolden) return updateGolden(ctx, file);

    const findings: Finding[] = [];
    let rules: AllowRule[] = [];
    if (ctx.opts.goldenAllow) {
      const allow = await readAllowFile(ctx.opts.goldenAllow);
      if (!allow.ok) return passedOrFailed([{ code: 'golden-allow-invalid', message: allow.message }]);
      rules = allow.rules;
    }
    const golden = await readGoldenFile(file);
    if (!golden.ok) return passedOrFailed([{ code: golden.code, message: golden.message }]);
    if (!golden.canonical) {
      findings.push({
        code: 'golden-not-canonical',
        message: `${file} is not in canonical form (sorted, fixed key order, one entry per line, LF line ends): rewrite it with --update-golden`,
      });
    }
    const cmp = compareWithGolden(golden.manifest, imageManifest, { compareMtime: ctx.opts.compareMtime, rules });
    findings.push(...cmp.kept.map(goldenFinding));
    findings.push(...cmp.stale.map((i) => staleRuleFinding(rules[i], i, ctx.opts.goldenAllow!)));
    const allowed = cmp.allowed.map(({ delta, rule }) => ({ path: delta.path, code: delta.code, field: delta.field, reason: rules[rule].reason }));
    return passedOrFailed(findings, {
      golden: file,
      compared: golden.manifest.entries.length,
      differences: cmp.kept.length,
      allowed,
      summary: `${golden.manifest.entries.length} entries compared with ${file}, ${plural(cmp.kept.length, 'difference')}` +
        (allowed.length ? `, ${allowed.length} allowed` : '') + (cmp.stale.length ? `, ${plural(cmp.stale.length, 'stale allow rule')}` : ''),
    });
  },
};

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

async function updateGolden(ctx: StageContext, file: string): Promise<StageOutcome> {
  const fresh = ctx.opts.compareMtime ? ctx.imageManifest! : goldenView(ctx.imageManifest!);
  const old = await readGoldenFile(file);
  let changes = 0;
  if (old.ok) {
    const deltas = diffManifests(old.manifest, fresh, { compareMtime: ctx.opts.compareMtime });
    changes = deltas.length;
    if (deltas.length) log.info(`golden: ${file} changes (golden -> image):\n${formatDiffText(deltas, { a: 'golden', b: 'image' })}`);
    else if (old.canonical) log.info(`golden: ${file} is up to date`);
  } else if (old.code === 'golden-invalid') {
    log.info(`golden: replacing ${file}, which could not be used: ${old.message.split('\n')[0]}`);
  }
  // A golden file records an accepted image only: write it once every stage passed.
  (ctx.onAccepted ??= []).push(async () => {
    await writeGoldenFile(file, fresh);
    if (!old.ok) log.info(`golden: wrote ${file} (${fresh.entries.length} entries)`);
  });
  const action = old.ok ? (changes ? `to be refreshed (${plural(changes, 'difference')})` : 'unchanged') : 'to be written';
  return passedOrFailed([], {
    golden: file, updated: true, changes,
    summary: `${file} ${action} once the image is accepted, ${fresh.entries.length} entries`,
  });
}
