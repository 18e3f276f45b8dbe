// JUnit XML: one testcase per stage, findings as the failure text.
import { writeFile } from 'node:fs/promises';
import type { Report } from '../types.js';

function esc(s: string): string {
  return s
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '')
    .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function reportToJunit(report: Report): string {
  const failures = report.stages.filter((s) => s.status === 'failed').length;
  const skips = report.stages.filter((s) => s.status === 'skipped' && s.skippedBy !== 'unavailable').length;
  const errors = report.stages.filter((s) => s.status === 'error' || (s.status === 'skipped' && s.skippedBy === 'unavailable')).length;
  const total = report.stages.reduce((t, s) => t + s.durationMs, 0) / 1000;
  const suite = esc(`part-image ${report.command}${report.output ? ` ${report.output}` : report.image ? ` ${report.image}` : ''}`);
  const cases = report.stages.map((s) => {
    const open = `    <testcase classname="part-image" name="${esc(s.name)}" time="${(s.durationMs / 1000).toFixed(3)}"`;
    if (s.status === 'passed') return `${open}/>`;
    if (s.status === 'skipped' && s.skippedBy === 'unavailable') {
      // It blocks acceptance (exit 3): CI views must not show it as a harmless skip.
      return `${open}>\n      <error message="${esc(`could not run here: ${s.reason ?? ''}`)}" type="unavailable"/>\n    </testcase>`;
    }
    if (s.status === 'error') {
      const kind = report.error?.kind ?? 'error';
      return `${open}>\n      <error message="${esc(s.reason ?? 'stopped')}" type="${esc(kind)}">${esc(report.error?.where ?? '')}</error>\n    </testcase>`;
    }
    if (s.status === 'skipped') return `${open}>\n      <skipped message="${esc(`${s.skippedBy}: ${s.reason ?? ''}`)}"/>\n    </testcase>`;
    const text = s.findings.map((f) => `[${f.code}] ${f.message}`).join('\n');
    const first = s.findings[0]?.message ?? 'failed';
    return `${open}>\n      <failure message="${esc(first)}" type="${esc(s.findings[0]?.code ?? 'failed')}">${esc(text)}</failure>\n    </testcase>`;
  });
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="part-image" tests="${report.stages.length}" failures="${failures}" errors="${errors}" skipped="${skips}" time="${total.toFixed(3)}">`,
    `  <testsuite name="${suite}" tests="${report.stages.length}" failures="${failures}" errors="${errors}" skipped="${skips}" time="${total.toFixed(3)}" timestamp="${esc(report.startedAt)}">`,
    ...cases,
    '  </testsuite>',
    '</testsuites>',
    '',
  ].join('\n');
}

export async function writeJunitReport(path: string, report: Report): Promise<void> {
  await writeFile(path, reportToJunit(report));
}
