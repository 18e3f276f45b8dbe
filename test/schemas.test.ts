// The shipped JSON schemas of the report, `doctor --json` and `diff --json`:
// each compiles under ajv's strict mode (what `ajv --strict` checks), and real
// outputs of part-image validate against them.
import { mkdtemp, mkdir, readFile, rm, writeFile, chmod } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';

const SCHEMAS = ['report', 'doctor', 'diff'] as const;
const load = (name: string) => JSON.parse(readFileSync(new URL(`../schema/${name}.schema.json`, import.meta.url), 'utf8'));

/** A fresh strict validator, with no formats or keywords added: what any strict reader gets. */
function strictValidator(name: string) {
  const ajv = new Ajv({ strict: true, allErrors: true });
  const validate = ajv.compile(load(name));
  return (data: unknown) => (validate(data) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`));
}

let work: string;
let a: string;
let b: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-schemas-'));
  a = join(work, 'a');
  b = join(work, 'b');
  for (const t of [a, b]) {
    await mkdir(join(t, 'etc'), { recursive: true });
    await writeFile(join(t, 'etc/os-release'), 'ID=schemas\n');
    await writeFile(join(t, 'etc/file'), t === a ? 'one\n' : 'two\n');
  }
  await writeFile(join(b, 'etc/only-b'), 'b\n');
  await chmod(join(b, 'etc/os-release'), 0o600);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('schemas', () => {
  it.each(SCHEMAS)('%s.schema.json compiles under ajv strict mode', (name) => {
    expect(() => new Ajv({ strict: true }).compile(load(name))).not.toThrow();
  });

  it('strict mode is really on: a schema with an undeclared required key is refused', () => {
    expect(() => new Ajv({ strict: true }).compile({ type: 'object', required: ['x'] })).toThrow(/strictRequired|strict mode/);
  });

  it('the JSON report of a real build carries part-image-report/1 and validates', async () => {
    const json = join(work, 'report.json');
    const r = await runCli(['build', '--skip', 'diagnose,nspawn', '--input', a, '--output', join(work, 'a.img'), '--free-mb', '4', '--report-json', json]);
    expect(r.exitCode, r.stderr).toBe(0);
    const report = JSON.parse(await readFile(json, 'utf8'));
    expect(report.format).toBe('part-image-report/1');
    expect(strictValidator('report')(report)).toEqual([]);
    expect(strictValidator('report')({ ...report, format: 'part-image-report/2' })).not.toEqual([]);
  });

  it('doctor --json validates against doctor.schema.json', async () => {
    const r = await runCli(['doctor', '--json']);
    expect([0, 3]).toContain(r.exitCode);
    const doc = JSON.parse(r.stdout);
    expect(doc.format).toBe('part-image-doctor/1');
    expect(doc.stages.length).toBeGreaterThan(5);
    expect(strictValidator('doctor')(doc)).toEqual([]);
    expect(strictValidator('doctor')({ ...doc, stages: [{ name: 'x' }] })).not.toEqual([]);
  });

  it('diff --json validates against diff.schema.json, for two trees that differ and for two that do not', async () => {
    const r = await runCli(['diff', a, b, '--json']);
    expect(r.exitCode, r.stderr).toBe(1);
    const diff = JSON.parse(r.stdout);
    expect(diff.format).toBe('part-image-diff/1');
    expect(diff.summary.byCode).toEqual({ content: 1, mode: 1, extra: 1 });
    expect(strictValidator('diff')(diff)).toEqual([]);
    const same = await runCli(['diff', a, a, '--json']);
    expect(same.exitCode, same.stderr).toBe(0);
    expect(strictValidator('diff')(JSON.parse(same.stdout))).toEqual([]);
    expect(strictValidator('diff')({ ...diff, differences: [{ code: 'colour', path: '/x' }] })).not.toEqual([]);
  });
});
