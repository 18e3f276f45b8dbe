// Stage options as data: each stage declares the VerifyOptions fields it
// reads as a JSON schema (Stage.options), and the runner checks them with ajv
// before the stage runs, so that a caller of the library (or a CLI bug) that
// hands a stage nonsense is told which field is wrong, instead of a stage
// misbehaving on it.
import { Ajv, type ValidateFunction } from 'ajv';
import { UsageError } from '../errors.js';
import { formatSchemaErrors } from '../schema.js';
import type { Stage, VerifyOptions } from './context.js';

// validateSchema: false: checking each schema against the JSON Schema
// meta-schema first compiled that meta-schema, 25-30 ms of the first stage
// to run (fsck: a third of its time on a Debian root). The schemas are this
// program's own, checked against it in test/stage-options.test.ts.
const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false, validateSchema: false });
const compiled = new WeakMap<object, ValidateFunction>();

function validatorOf(stage: Pick<Stage, 'options'>): ValidateFunction {
  let v = compiled.get(stage.options);
  if (!v) {
    v = ajv.compile(stage.options);
    compiled.set(stage.options, v);
  }
  return v;
}

/** The options `stage` declares, as data: a Set becomes a sorted array, an undefined value is left out. */
export function stageOptionsOf(stage: Pick<Stage, 'options'>, opts: Partial<VerifyOptions> | Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const given = opts as Record<string, unknown>;
  for (const key of Object.keys(stage.options.properties)) {
    const value = given[key];
    if (value === undefined) continue;
    out[key] = value instanceof Set ? [...value].sort() : value;
  }
  return out;
}

/** The problems of `data` against the stage's options schema, one readable line each; [] when it is valid. */
export function stageOptionsProblems(stage: Pick<Stage, 'options'>, data: unknown): string[] {
  const validate = validatorOf(stage);
  return validate(data) ? [] : formatSchemaErrors(validate.errors ?? []);
}

/** Throws a UsageError (exit 2) naming the stage and every wrong field when its options do not fit its schema. */
export function checkStageOptions(stage: Pick<Stage, 'name' | 'options'>, opts: VerifyOptions): void {
  const problems = stageOptionsProblems(stage, stageOptionsOf(stage, opts));
  if (problems.length) {
    throw new UsageError(`the ${stage.name} stage's options do not fit its schema: ${problems.join('; ')}`,
      `Pass options as the ${stage.name} stage declares them (Stage.options in src/stages/).`);
  }
}

/** Fields that several stages read, declared once. */
export const OPTION = {
  /** --boot-timeout in ms. */
  bootTimeoutMs: { type: 'integer', minimum: 1 },
  /** --nspawn-command, split into argv. */
  nspawnCommand: { type: 'array', items: { type: 'string' }, minItems: 1 },
  /** --skip: stage names. */
  skip: { type: 'array', items: { type: 'string' }, uniqueItems: true },
  /** --portable: the portable stages must apply. */
  portable: { type: 'boolean' },
  /** --compare-mtime. */
  compareMtime: { type: 'boolean' },
} as const;

/** The schema of a stage that reads no option. */
export const NO_OPTIONS = { type: 'object', properties: {}, additionalProperties: false } as const;
