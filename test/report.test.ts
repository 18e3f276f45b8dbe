import { describe, expect, it } from 'vitest';
import type { Report } from '../src/types.js';
import { reportToJson } from '../src/report/json.js';
import { reportToJunit, xmlEscape } from '../src/report/junit.js';
import { formatTextReport } from '../src/report/text.js';
import { exitCodeFor, isAccepted } from '../src/stages/run.js';

const report: Report = {
  tool: 'part-image', version: '0.1.0', command: 'build', accepted: false,
  output: 'out.img', image: 'out.img.rejected', startedAt: '2026-11-25T19:00:00.000Z', durationMs: 1234,
  stages: [
    { name: 'fsck', status: 'passed', durationMs: 120, findings: [], details: { summary: 'root: 11/100 files' } },
    { name: 'diff', status: 'failed', durationMs: 30, findings: [
      { code: 'xattr', message: '/usr/bin/ping: xattr security.capability differs', path: '/usr/bin/ping', field: 'security.capability', expected: '01', actual: undefined },
      { code: 'mode', message: '/a & <b>: mode differs', path: '/a & <b>', field: 'mode', expected: '0755', actual: '0644' },
    ] },
    { name: 'nspawn', status: 'skipped', skippedBy: 'request', reason: '--skip', durationMs: 0, findings: [] },
  ],
};

describe('reports', () => {
  it('validates the JSON report against the shipped schema', () => {
    const json = JSON.parse(reportToJson(report));
    expect(json.accepted).toBe(false);
    expect(json.stages[1].findings[0]).toMatchObject({ code: 'xattr', path: '/usr/bin/ping', field: 'security.capability' });
  });
  it('refuses a report that breaks the schema', () => {
    const bad = { ...report, stages: [{ name: 'x', status: 'skipped', durationMs: 0, findings: [] }] } as unknown as Report;
    expect(() => reportToJson(bad)).toThrow(/does not match its schema/);
  });
  it('writes one JUnit testcase per stage, findings as failure text, XML-escaped', () => {
    const xml = reportToJunit(report);
    expect(xml.match(/<testcase /g)).toHaveLength(3);
    expect(xml).toContain('failures="1" errors="0" skipped="1"');
    expect(xml).toContain('[mode] /a &amp; &lt;b&gt;: mode differs');
    expect(xml).toContain('<skipped message="request: --skip"/>');
  });
  it('leaves not-applicable stages out of the JUnit counts, numbers the classnames in pipeline order, and carries the summary', () => {
    const stages = [...report.stages, { name: 'portable', status: 'skipped' as const, skippedBy: 'not-applicable' as const, reason: 'no unit', durationMs: 0, findings: [] }];
    const xml = reportToJunit({ ...report, stages });
    expect(xml.match(/<testcase /g)).toHaveLength(3);
    expect(xml).toContain('<testsuites name="part-image" tests="3" failures="1" errors="0" time="0.150">');
    expect(xml).toContain('tests="3" failures="1" errors="0" skipped="1"');
    expect(xml).not.toMatch(/<testsuites [^>]*skipped=/);
    expect(xml).toContain('<property name="part-image.not-applicable.portable" value="no unit"/>');
    expect([...xml.matchAll(/classname="([^"]+)"/g)].map((m) => m[1])).toEqual(['part-image.01-fsck', 'part-image.02-diff', 'part-image.03-nspawn']);
    expect(xml).toContain('<system-out>root: 11/100 files</system-out>');
    expect(xml).toContain('<system-out>  PASS  fsck');
    expect(xml).toContain('REJECTED: out.img.rejected (1.2 s)\n</system-out>');
  });
  it('writes a JSON report with its format version first, and an XML file that holds no character XML forbids', () => {
    expect(Object.keys(JSON.parse(reportToJson(report)))[0]).toBe('format');
    expect(JSON.parse(reportToJson(report)).format).toBe('part-image-report/1');
    expect(xmlEscape('a\u0001b\ud800c\uffffd\u{1F600}&')).toBe('ab\ufffdcd\u{1F600}&amp;');
  });
  it('prints a summary with each stage, its time and the verdict', () => {
    const text = formatTextReport(report);
    expect(text).toMatch(/PASS {2}fsck +120 ms/);
    expect(text).toMatch(/FAIL {2}diff/);
    expect(text).toContain('[xattr] /usr/bin/ping: xattr security.capability differs');
    expect(text).toContain('skipped by request');
    expect(text).toMatch(/REJECTED: out\.img\.rejected \(1\.2 s\)/);
  });
  it('accepts only when nothing failed and nothing required was unavailable', () => {
    expect(isAccepted(report.stages)).toBe(false);
    expect(exitCodeFor(report.stages)).toBe(1);
    const unavailable = [{ name: 'nspawn', status: 'skipped' as const, skippedBy: 'unavailable' as const, reason: 'no root', durationMs: 0, findings: [] }];
    expect(isAccepted(unavailable)).toBe(false);
    const xml = reportToJunit({ ...report, stages: unavailable });
    expect(xml).toContain('errors="1" skipped="0"');
    expect(xml).toContain('<error message="could not run here: no root" type="unavailable"/>');
    expect(exitCodeFor(unavailable)).toBe(3);
    expect(isAccepted([report.stages[0], report.stages[2]])).toBe(true);
  });
});
