// The JSON report: validated against schema/report.schema.json before it is written.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { Ajv } from 'ajv';
import type { Report } from '../types.js';

const schemaUrl = new URL('../../schema/report.schema.json', import.meta.url);
let validator: ((data: unknown) => boolean) & { errors?: unknown } | undefined;

function validate(): NonNullable<typeof validator> {
  if (!validator) {
    const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false });
    ajv.addFormat('date-time', (s: string) => !Number.isNaN(Date.parse(s)));
    validator = ajv.compile(JSON.parse(readFileSync(schemaUrl, 'utf8')));
  }
  return validator;
}

/** Throws when the report does not match the schema: a bug, never the user's fault. */
export function reportToJson(report: Report): string {
  const v = validate();
  const data = JSON.parse(JSON.stringify(report));
  if (!v(data)) throw new Error(`internal error: the report does not match its schema: ${JSON.stringify(v.errors)}`);
  return `${JSON.stringify(data, null, 2)}\n`;
}

export async function writeJsonReport(path: string, report: Report): Promise<void> {
  await writeFile(path, reportToJson(report));
}
