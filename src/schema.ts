// The JSON schemas that ship in schema/: compiled once each with ajv, shared by
// the report writer, the manifest writer and the golden-file readers.
import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject } from 'ajv';

export type SchemaName = 'report' | 'manifest' | 'golden-allow' | 'doctor' | 'diff';

/** Returns the problems of `data` against the schema, one readable line each; [] when it is valid. */
export type SchemaCheck = (data: unknown) => string[];

const cache = new Map<SchemaName, SchemaCheck>();
let ajv: Ajv | undefined;

export function schemaUrl(name: SchemaName): URL {
  return new URL(`../schema/${name}.schema.json`, import.meta.url);
}

export function schemaCheck(name: SchemaName): SchemaCheck {
  let check = cache.get(name);
  if (!check) {
    if (!ajv) {
      ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false });
      ajv.addFormat('date-time', (s: string) => !Number.isNaN(Date.parse(s)));
    }
    const validate = ajv.compile(JSON.parse(readFileSync(schemaUrl(name), 'utf8')));
    check = (data) => (validate(data) ? [] : formatSchemaErrors(validate.errors ?? []));
    cache.set(name, check);
  }
  return check;
}

/** "/entries/3/mode: must match pattern ..." lines, capped so that a wholly wrong file stays readable. */
export function formatSchemaErrors(errors: readonly ErrorObject[], max = 10): string[] {
  const lines = errors.map((e) => {
    const extra = e.keyword === 'additionalProperties' ? ` (${(e.params as { additionalProperty: string }).additionalProperty})` : '';
    return `${e.instancePath || '(top level)'}: ${e.message ?? e.keyword}${extra}`;
  });
  return lines.length > max ? [...lines.slice(0, max), `... and ${lines.length - max} more`] : lines;
}

/** JSON text of an output that must match its shipped schema; a mismatch is a bug in part-image, never the user's fault. */
export function checkedJson(name: SchemaName, data: unknown): string {
  const problems = schemaCheck(name)(data);
  if (problems.length) throw new Error(`internal error: the ${name} output does not match schema/${name}.schema.json: ${problems.join('; ')}`);
  return `${JSON.stringify(data, null, 2)}\n`;
}
