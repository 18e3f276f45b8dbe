// The JSON report: validated against schema/report.schema.json before it is written.
import { writeFile } from 'node:fs/promises';
import type { Report } from '../types.js';
import { schemaCheck } from '../schema.js';

/** The report file's format version; a reader checks it before it trusts any other key. */
export const REPORT_FORMAT = 'part-image-report/1';

/** Throws when the report does not match the schema: a bug, never the user's fault. */
export function reportToJson(report: Report): string {
  const data = { format: REPORT_FORMAT, ...JSON.parse(JSON.stringify(report)) };
  const problems = schemaCheck('report')(data);
  if (problems.length) throw new Error(`internal error: the report does not match its schema: ${problems.join('; ')}`);
  return `${JSON.stringify(data, null, 2)}\n`;
}

export async function writeJsonReport(path: string, report: Report): Promise<void> {
  await writeFile(path, reportToJson(report));
}
