// Each stage's options schema (osbuild's model: a table of good and bad
// options per stage), and the runner refusing a stage whose options do not fit
// before the stage runs.
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { Scope } from '../src/cleanup.js';
import { UsageError } from '../src/errors.js';
import { verifyOptions as cliVerifyOptions } from '../src/commands/common.js';
import { ALL_STAGE_NAMES, VERIFY_STAGES } from '../src/stages/index.js';
import { checkStageOptions, stageOptionsOf, stageOptionsProblems } from '../src/stages/options.js';
import { runStages } from '../src/stages/run.js';
import type { Stage, StageContext } from '../src/stages/context.js';
import type { StageResult } from '../src/types.js';
import { verifyOptions } from './fixtures/boot/images.js';

type Row = Record<string, unknown>;
/** Per stage: options that fit, and options that do not with the problem ajv names. */
const TABLE: Record<string, { good: Row[]; bad: [Row, RegExp][] }> = {
  fsck: { good: [{}], bad: [[{ compareMtime: true }, /must NOT have additional properties \(compareMtime\)/]] },
  readback: { good: [{}], bad: [[{ golden: 'g.json' }, /additional properties \(golden\)/]] },
  diff: {
    good: [{ compareMtime: false }, { compareMtime: true }],
    bad: [
      [{}, /must have required property 'compareMtime'/],
      [{ compareMtime: 'yes' }, /\/compareMtime: must be boolean/],
      [{ compareMtime: true, compareMtimes: true }, /additional properties \(compareMtimes\)/],
    ],
  },
  golden: {
    good: [
      { compareMtime: false },
      { compareMtime: false, golden: 'golden.json' },
      { compareMtime: false, golden: 'golden.json', updateGolden: true },
      { compareMtime: true, golden: 'golden.json', updateGolden: false, goldenAllow: 'allow.json' },
      { compareMtime: false, updateGolden: false },
    ],
    bad: [
      [{ compareMtime: false, updateGolden: true }, /must have required property 'golden'/],
      [{ compareMtime: false, goldenAllow: 'allow.json' }, /must have property golden when property goldenAllow is present/],
      [{ compareMtime: false, golden: 7 }, /\/golden: must be string/],
      [{ compareMtime: false, golden: 'g.json', updateGolden: 'yes' }, /\/updateGolden: must be boolean/],
    ],
  },
  freespace: {
    good: [{}, { requiredFreeMb: 0 }, { requiredFreeMb: 16 }, { requiredFreeMb: 16777215 }],
    bad: [
      [{ requiredFreeMb: -1 }, /\/requiredFreeMb: must be >= 0/],
      [{ requiredFreeMb: 1.5 }, /\/requiredFreeMb: must be integer/],
      [{ requiredFreeMb: 16777216 }, /\/requiredFreeMb: must be <= 16777215/],
      [{ requiredFreeMb: '16' }, /must be integer/],
    ],
  },
  diagnose: {
    good: [{ skip: [] }, { skip: ['nspawn'] }, { skip: ['nspawn', 'portable'], nspawnCommand: ['/usr/bin/busybox', 'true'] }],
    bad: [
      [{}, /must have required property 'skip'/],
      [{ skip: [], nspawnCommand: [] }, /\/nspawnCommand: must NOT have fewer than 1 items/],
      [{ skip: [], nspawnCommand: '/bin/true' }, /\/nspawnCommand: must be array/],
      [{ skip: ['nspawn', 'nspawn'] }, /\/skip: must NOT have duplicate items/],
      [{ skip: [3] }, /\/skip\/0: must be string/],
    ],
  },
  nspawn: {
    good: [
      { bootTimeoutMs: 120_000, allowFailedUnits: [] },
      { bootTimeoutMs: 1, allowFailedUnits: ['foo', 'bar.service'], nspawnCommand: ['busybox', 'sh', '-c', 'echo ok'] },
    ],
    bad: [
      [{ allowFailedUnits: [] }, /must have required property 'bootTimeoutMs'/],
      [{ bootTimeoutMs: 0, allowFailedUnits: [] }, /\/bootTimeoutMs: must be >= 1/],
      [{ bootTimeoutMs: 2.5, allowFailedUnits: [] }, /\/bootTimeoutMs: must be integer/],
      [{ bootTimeoutMs: 1000 }, /must have required property 'allowFailedUnits'/],
      [{ bootTimeoutMs: 1000, allowFailedUnits: 'foo' }, /\/allowFailedUnits: must be array/],
      [{ bootTimeoutMs: 1000, allowFailedUnits: [], nspawnCommand: [] }, /\/nspawnCommand: must NOT have fewer than 1 items/],
    ],
  },
  'portable-lint': {
    good: [{ portable: false }, { portable: true }],
    bad: [
      [{}, /must have required property 'portable'/],
      [{ portable: 1 }, /\/portable: must be boolean/],
    ],
  },
  portable: {
    good: [{ portable: false, bootTimeoutMs: 120_000 }, { portable: true, bootTimeoutMs: 5 }],
    bad: [
      [{ portable: true }, /must have required property 'bootTimeoutMs'/],
      [{ portable: true, bootTimeoutMs: -5 }, /\/bootTimeoutMs: must be >= 1/],
      [{ portable: 'yes', bootTimeoutMs: 1000 }, /\/portable: must be boolean/],
    ],
  },
  reproducible: {
    good: [{}, { checkReproducible: true }, { checkReproducible: false }],
    bad: [[{ checkReproducible: 'no' }, /\/checkReproducible: must be boolean/]],
  },
};

const byName = Object.fromEntries(VERIFY_STAGES.map((s) => [s.name, s])) as Record<string, Stage>;

describe('stage options schemas', () => {
  it('are valid JSON schemas (the runner compiles them without checking them against the meta-schema)', () => {
    const meta = new Ajv({ strict: true, strictRequired: false });
    for (const s of VERIFY_STAGES) expect(meta.validateSchema(s.options), `${s.name}: ${JSON.stringify(meta.errors)}`).toBe(true);
    expect(meta.validateSchema({ type: 'object', properties: { x: { type: 'integr' } } })).toBe(false);
  });

  it('cover every stage, and every stage declares its tools and where it runs', () => {
    expect(Object.keys(TABLE).sort()).toEqual([...ALL_STAGE_NAMES].sort());
    for (const s of VERIFY_STAGES) {
      expect(s.options.type, s.name).toBe('object');
      expect(s.options.additionalProperties, s.name).toBe(false);
      expect(['rootless', 'boot', 'portable'], s.name).toContain(s.runs);
      expect(Array.isArray(s.tools), s.name).toBe(true);
    }
  });

  for (const [name, { good, bad }] of Object.entries(TABLE)) {
    describe(name, () => {
      it.each(good.map((o) => [JSON.stringify(o), o]))('accepts %s', (_label, o) => {
        expect(stageOptionsProblems(byName[name], o)).toEqual([]);
      });
      it.each(bad.map(([o, why]) => [JSON.stringify(o), o, why]))('refuses %s', (_label, o, why) => {
        const problems = stageOptionsProblems(byName[name], o);
        expect(problems.length).toBeGreaterThan(0);
        expect(problems.join('\n')).toMatch(why);
      });
    });
  }

  it("accept what the CLI's flag parser and the test fixtures give every stage", () => {
    const fromCli = [
      cliVerifyOptions({}, ALL_STAGE_NAMES),
      cliVerifyOptions({ skip: ['diagnose,nspawn'], 'boot-timeout': '90s', 'allow-failed-unit': ['a', 'b.service'], 'nspawn-command': '/usr/bin/busybox sh -c "echo ok"', portable: true, 'compare-mtime': true }, ALL_STAGE_NAMES),
      verifyOptions(),
      verifyOptions({ requiredFreeMb: 16, checkReproducible: true }),
    ];
    for (const opts of fromCli) {
      for (const s of VERIFY_STAGES) {
        expect(stageOptionsProblems(s, stageOptionsOf(s, opts)), s.name).toEqual([]);
        expect(() => checkStageOptions(s, opts)).not.toThrow();
      }
    }
  });

  it('check a stage on the fields it declares: a Set as a sorted array, undefined left out, the rest not its business', () => {
    const opts = verifyOptions({ skip: new Set(['portable', 'nspawn']), nspawnCommand: undefined, golden: 'g.json' });
    expect(stageOptionsOf(byName.diagnose, opts)).toEqual({ skip: ['nspawn', 'portable'], allowFailedUnits: [] });
    expect(stageOptionsOf(byName.fsck, opts)).toEqual({});
  });

  it('a stage whose options do not fit does not run: the runner reports it as an error and stops with exit 2', async () => {
    const scope = new Scope();
    try {
      // The image does not exist: had the stage run, it would have failed on that, not on its options.
      const ctx: StageContext = { image: '/nonexistent/part-image.img', imageName: 'part-image.img', opts: verifyOptions({ bootTimeoutMs: 0 }), scope };
      const results: StageResult[] = [];
      const err = await runStages([byName.nspawn, byName.fsck], ctx, results).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UsageError);
      expect((err as UsageError).exitCode).toBe(2);
      expect((err as Error).message).toBe("the nspawn stage's options do not fit its schema: /bootTimeoutMs: must be >= 1");
      expect(results).toEqual([expect.objectContaining({ name: 'nspawn', status: 'error', findings: [] })]);
    } finally {
      await scope.close();
    }
  });
});
