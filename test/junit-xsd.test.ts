// The JUnit file of a real accepted and a real rejected build, checked by
// xmllint against Jenkins' junit-10.xsd (test/fixtures/junit, from
// jenkinsci/xunit-plugin), the schema CI servers hold JUnit files to.
import { mkdtemp, readFile, rm, writeFile, mkdir, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';

const XSD = fileURLToPath(new URL('./fixtures/junit/junit-10.xsd', import.meta.url));
let work: string;
let tree: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-junit-'));
  tree = join(work, 'tree');
  await mkdir(join(tree, 'etc'), { recursive: true });
  await mkdir(join(tree, 'usr/bin'), { recursive: true });
  await writeFile(join(tree, 'etc/os-release'), 'ID=junit\n');
  await writeFile(join(tree, 'usr/bin/tool'), 'tool & <friends>\n');
  await chmod(join(tree, 'usr/bin/tool'), 0o4755);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function xmllint(file: string) {
  const r = await execa('xmllint', ['--noout', '--schema', XSD, file], { reject: false });
  return { exitCode: r.exitCode, stderr: String(r.stderr) };
}

/** classname, name and the child element of each testcase, in file order. */
function cases(xml: string) {
  return [...xml.matchAll(/<testcase classname="([^"]*)" name="([^"]*)"[^>]*?(\/>|>\s*<(\w[\w-]*))/g)]
    .map((m) => ({ classname: m[1], name: m[2], child: m[4] ?? 'none' }));
}

describe('JUnit output against junit-10.xsd', () => {
  it('an accepted build: valid, stages in pipeline order, not-applicable stages not counted, the summary in system-out', async () => {
    const out = join(work, 'ok.img');
    const junit = join(work, 'ok.xml');
    const json = join(work, 'ok.json');
    const r = await runCli(['build', '--skip', 'diagnose,nspawn', '--input', tree, '--output', out, '--free-mb', '4', '--junit', junit, '--report-json', json]);
    expect(r.exitCode, r.stderr).toBe(0);
    const lint = await xmllint(junit);
    expect(lint.stderr).toContain(`${junit} validates`);
    expect(lint.exitCode).toBe(0);
    const xml = await readFile(junit, 'utf8');
    const report = JSON.parse(await readFile(json, 'utf8'));
    const stages = report.stages as { name: string; status: string; skippedBy?: string }[];
    const counted = stages.filter((s) => s.skippedBy !== 'not-applicable');
    const notApplicable = stages.filter((s) => s.skippedBy === 'not-applicable').map((s) => s.name);
    expect(notApplicable).toEqual(expect.arrayContaining(['portable-lint', 'portable']));
    const got = cases(xml);
    expect(got.map((c) => c.name)).toEqual(counted.map((s) => s.name));
    // Viewers sort by classname: sorted, it is still the pipeline order.
    expect([...got.map((c) => c.classname)].sort()).toEqual(got.map((c) => c.classname));
    expect(got.find((c) => c.name === 'nspawn')?.child).toBe('skipped');
    expect(xml).toMatch(new RegExp(`<testsuites name="part-image" tests="${counted.length}" failures="0" errors="0" time="[0-9.]+">`));
    expect(xml).toContain(`tests="${counted.length}" failures="0" errors="0" skipped="2"`);
    for (const n of notApplicable) expect(xml).toContain(`<property name="part-image.not-applicable.${n}" value="`);
    expect(xml).toMatch(/<system-out> {2}PASS {2}read[^]*ACCEPTED: [^\n]*ok\.img[^]*<\/system-out>\n {2}<\/testsuite>/);
  });

  it('a rejected build: valid, the failing stage a <failure> with its findings', async () => {
    const golden = join(work, 'golden.json');
    const first = await runCli(['build', '--skip', 'diagnose,nspawn', '--input', tree, '--output', join(work, 'first.img'), '--free-mb', '4', '--golden', golden, '--update-golden']);
    expect(first.exitCode, first.stderr).toBe(0);
    await chmod(join(tree, 'usr/bin/tool'), 0o755);
    const out = join(work, 'bad.img');
    const junit = join(work, 'bad.xml');
    const r = await runCli(['build', '--skip', 'diagnose,nspawn', '--input', tree, '--output', out, '--free-mb', '4', '--golden', golden, '--junit', junit]);
    expect(r.exitCode, r.stderr).toBe(1);
    const lint = await xmllint(junit);
    expect(lint.stderr).toContain(`${junit} validates`);
    expect(lint.exitCode).toBe(0);
    const xml = await readFile(junit, 'utf8');
    expect(cases(xml).find((c) => c.name === 'golden')?.child).toBe('failure');
    expect(xml).toMatch(/<testsuites [^>]*failures="1" errors="0"/);
    expect(xml).toMatch(/<failure message="[^"]*\/usr\/bin\/tool[^"]*" type="mode">\[mode\] /);
    expect(xml).toContain('<property name="part-image.verdict" value="rejected"/>');
    expect(xml).toMatch(/REJECTED: [^\n]*bad\.img\.rejected[^]*<\/system-out>/);

    // The check is real: the attribute CI servers refused before is refused here too.
    const broken = join(work, 'broken.xml');
    await writeFile(broken, xml.replace('<testsuites name="part-image"', '<testsuites name="part-image" skipped="0"'));
    const refused = await xmllint(broken);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toContain("The attribute 'skipped' is not allowed");
  });
});
