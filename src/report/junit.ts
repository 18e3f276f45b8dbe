// JUnit XML as Jenkins' junit-10.xsd (xunit-plugin) defines it, which is the
// strictest of the usual consumers (Jenkins, GitLab, xunit-viewer, dorny/test-reporter):
// - one testcase per stage, in pipeline order: each classname carries the
//   stage's position ("part-image.03-fsck"), because viewers sort by it;
// - a stage that does not apply (portable for an image without a unit) is no
//   test at all: it is left out of the counts and named in a property, so a
//   green build does not read "5 passed, 5 skipped";
// - skipped by request: <skipped>; could not run here (blocks acceptance) and
//   stopped on an error: <error>; failed: <failure> with every finding;
// - the text summary, as stdout shows it, in the suite's <system-out>, and each
//   stage's own summary line and notes in its testcase's <system-out>.
import { writeFile } from 'node:fs/promises';
import type { Report, StageResult } from '../types.js';
import { formatTextReport, stageDetail } from './text.js';

/** Escapes for attributes and text, and drops what XML 1.0 cannot hold at all (most C0 controls, lone surrogates, U+FFFE/U+FFFF). */
export function xmlEscape(s: string): string {
  return s
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '')
    .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd')
    .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const secs = (ms: number) => (ms / 1000).toFixed(3);

function suiteName(r: Report): string {
  return `part-image ${r.command}${r.output ? ` ${r.output}` : r.image ? ` ${r.image}` : ''}`;
}

function caseBody(s: StageResult, r: Report): string[] {
  if (s.status === 'passed') return [];
  if (s.status === 'skipped' && s.skippedBy === 'unavailable') {
    // It blocks acceptance (exit 3): CI views must not show it as a harmless skip.
    return [`<error message="${xmlEscape(`could not run here: ${s.reason ?? ''}`)}" type="unavailable"/>`];
  }
  if (s.status === 'error') {
    return [`<error message="${xmlEscape(s.reason ?? 'stopped')}" type="${xmlEscape(r.error?.kind ?? 'error')}">${xmlEscape(r.error?.where ?? '')}</error>`];
  }
  if (s.status === 'skipped') return [`<skipped message="${xmlEscape(`${s.skippedBy}: ${s.reason ?? ''}`)}"/>`];
  const text = s.findings.map((f) => `[${f.code}] ${f.message}`).join('\n');
  return [`<failure message="${xmlEscape(s.findings[0]?.message ?? 'failed')}" type="${xmlEscape(s.findings[0]?.code ?? 'failed')}">${xmlEscape(text)}</failure>`];
}

function caseOut(s: StageResult): string | undefined {
  const lines = [stageDetail(s), ...((s.details?.notes as string[] | undefined) ?? []).map((n) => `note: ${n}`)].filter(Boolean);
  return lines.length ? `<system-out>${xmlEscape(lines.join('\n'))}</system-out>` : undefined;
}

export function reportToJunit(report: Report): string {
  const width = Math.max(2, String(report.stages.length).length);
  const counted = report.stages.map((s, i) => ({ s, order: String(i + 1).padStart(width, '0') }))
    .filter(({ s }) => !(s.status === 'skipped' && s.skippedBy === 'not-applicable'));
  const notApplicable = report.stages.filter((s) => s.status === 'skipped' && s.skippedBy === 'not-applicable');
  const failures = counted.filter(({ s }) => s.status === 'failed').length;
  const skips = counted.filter(({ s }) => s.status === 'skipped' && s.skippedBy !== 'unavailable').length;
  const errors = counted.filter(({ s }) => s.status === 'error' || (s.status === 'skipped' && s.skippedBy === 'unavailable')).length;
  const time = secs(report.stages.reduce((t, s) => t + s.durationMs, 0));
  const counts = `tests="${counted.length}" failures="${failures}" errors="${errors}"`;
  const properties: [string, string][] = [
    ['part-image.version', report.version],
    ['part-image.command', report.command],
    ['part-image.verdict', report.accepted ? 'accepted' : report.error ? `no verdict (${report.error.kind}, exit ${report.error.exitCode})` : 'rejected'],
    ...(report.input ? [['part-image.input', report.input] as [string, string]] : []),
    ...(report.output ? [['part-image.output', report.output] as [string, string]] : []),
    ...(report.image ? [['part-image.image', report.image] as [string, string]] : []),
    ...(report.cause ? [['part-image.cause', report.cause] as [string, string]] : []),
    ...notApplicable.map((s) => [`part-image.not-applicable.${s.name}`, s.reason ?? ''] as [string, string]),
  ];
  const cases = counted.flatMap(({ s, order }) => {
    const open = `    <testcase classname="part-image.${order}-${xmlEscape(s.name)}" name="${xmlEscape(s.name)}" time="${secs(s.durationMs)}"`;
    const inner = [...caseBody(s, report), caseOut(s)].filter((x): x is string => x !== undefined);
    return inner.length ? [`${open}>`, ...inner.map((x) => `      ${x}`), '    </testcase>'] : [`${open}/>`];
  });
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    // junit-10.xsd allows no `skipped` on <testsuites>; the suite carries it.
    `<testsuites name="part-image" ${counts} time="${time}">`,
    `  <testsuite name="${xmlEscape(suiteName(report))}" ${counts} skipped="${skips}" time="${time}" timestamp="${xmlEscape(report.startedAt)}">`,
    '    <properties>',
    ...properties.map(([k, v]) => `      <property name="${xmlEscape(k)}" value="${xmlEscape(v)}"/>`),
    '    </properties>',
    ...cases,
    `    <system-out>${xmlEscape(formatTextReport(report))}</system-out>`,
    '  </testsuite>',
    '</testsuites>',
    '',
  ].join('\n');
}

export async function writeJunitReport(path: string, report: Report): Promise<void> {
  await writeFile(path, reportToJunit(report));
}
