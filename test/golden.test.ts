// Golden manifests: the file format (schema, byte stability), allow rules, and
// the golden stage through the CLI on the built-in demo image, including the
// repo's own golden/demo.manifest.json.
import { copyFile, mkdtemp, readFile, rm, writeFile, chmod, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { skipAllBut } from './helpers/stages.js';
import { writeDemoTar } from '../src/demo/tree.js';
import { applyAllowRules, globToRegExp, parseAllowText } from '../src/golden/allow.js';
import { goldenText, parseGoldenText, writeGoldenFile } from '../src/golden/file.js';
import { readdir } from 'node:fs/promises';
import { CLI } from './helpers/cli.js';
import { dirname } from 'node:path';
import { makeManifest } from '../src/manifest/entry.js';
import type { Delta } from '../src/manifest/diff.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const GOLDEN = join(repo, 'golden/demo.manifest.json');
const ALLOW = join(repo, 'golden/demo.allow.json');
const STAGES = skipAllBut('fsck', 'readback', 'diff', 'golden', 'freespace');

let work: string;
let demoTar: string;
let demoDir: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pi-golden-test-'));
  demoTar = join(work, 'demo.tar');
  await writeDemoTar(demoTar);
  demoDir = join(work, 'demo-dir');
  await mkdir(demoDir);
  await execa('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', demoTar, '-C', demoDir]);
});
afterAll(() => rm(work, { recursive: true, force: true }));

const build = (input: string, name: string, ...extra: string[]) =>
  runCli(['build', '--input', input, '--output', join(work, `${name}.img`), '--label', 'demo', '--free-mb', '16', ...STAGES,
    '--report-json', join(work, `${name}.json`), ...extra]);
const stage = async (name: string, stageName = 'golden') =>
  JSON.parse(await readFile(join(work, `${name}.json`), 'utf8')).stages.find((s: { name: string }) => s.name === stageName);

describe('golden file format', () => {
  const entries = [
    { path: '/', type: 'dir' as const, mode: '0755', uid: 0, gid: 0, mtime: 1 },
    { path: '/a b', type: 'file' as const, mode: '0644', uid: 0, gid: 0, size: 0, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', mtime: 2 },
  ];

  it('leaves mtimes out, one entry per line, and reads back as canonical', () => {
    const text = goldenText(makeManifest(entries));
    expect(text).toBe('{"format":"part-image-manifest/1","entries":[\n'
      + '{"path":"/","type":"dir","mode":"0755","uid":0,"gid":0},\n'
      + '{"path":"/a b","type":"file","mode":"0644","uid":0,"gid":0,"size":0,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}\n]}\n');
    const back = parseGoldenText(text, 'x');
    expect(back.ok && back.canonical).toBe(true);
  });

  it('checks the schema and says where a file is wrong', () => {
    const bad = parseGoldenText('{"format":"part-image-manifest/1","entries":[{"path":"/","type":"dir","mode":"755","uid":0,"gid":0,"colour":"red"}]}', 'g.json');
    expect(bad.ok).toBe(false);
    if (!bad.ok) {
      expect(bad.code).toBe('golden-invalid');
      expect(bad.message).toContain('/entries/0/mode: must match pattern');
      expect(bad.message).toContain('must NOT have additional properties (colour)');
    }
    const other = parseGoldenText('{"entries":[]}', 'g.json');
    expect(other.ok).toBe(false);
  });

  it('flags a valid file that is not written the canonical way (hand edit, CRLF)', () => {
    const text = goldenText(makeManifest(entries)).replace(/\n/g, '\r\n');
    const back = parseGoldenText(text, 'x');
    expect(back.ok && back.canonical).toBe(false);
  });

  it('writes atomically and leaves no temporary file, when it succeeds or fails', async () => {
    const dir = join(work, 'atomic');
    await mkdir(dir);
    const file = join(dir, 'g.manifest.json');
    await writeFile(file, 'old\n');
    const text = await writeGoldenFile(file, makeManifest(entries));
    expect(await readFile(file, 'utf8')).toBe(text);
    // The rename fails (a directory is in the way): the temporary file goes too.
    const blocked = join(dir, 'blocked.manifest.json');
    await mkdir(join(blocked, 'sub'), { recursive: true });
    await expect(writeGoldenFile(blocked, makeManifest(entries))).rejects.toThrow();
    expect((await readdir(dir)).sort()).toEqual(['blocked.manifest.json', 'g.manifest.json']);
  });

  it('an interrupt mid-write (shutdown() closing the live scopes) leaves neither a temporary file nor a half golden file', async () => {
    const dir = join(work, 'interrupted');
    await mkdir(dir);
    const dist = dirname(CLI);
    // In a child process: shutdown() is for good. It starts while the write is under way.
    const script = [
      `import { writeGoldenFile } from ${JSON.stringify(join(dist, 'golden/file.js'))};`,
      `import { makeManifest } from ${JSON.stringify(join(dist, 'manifest/entry.js'))};`,
      `import { shutdown } from ${JSON.stringify(join(dist, 'cleanup.js'))};`,
      `const writing = writeGoldenFile(${JSON.stringify(join(dir, 'g.manifest.json'))}, makeManifest(${JSON.stringify(entries)}));`,
      'const outcome = writing.then(() => "written", (e) => e.name);',
      'await shutdown();',
      'console.log(await outcome);',
    ].join('\n');
    const r = await execa('node', ['--input-type=module', '-e', script], { reject: false });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('InterruptedError');
    expect(await readdir(dir)).toEqual([]);
  });

  it('the repo golden file and allow file are valid and canonical', async () => {
    const g = parseGoldenText(await readFile(GOLDEN, 'utf8'), GOLDEN);
    expect(g.ok && g.canonical).toBe(true);
    expect(parseAllowText(await readFile(ALLOW, 'utf8'), ALLOW).ok).toBe(true);
  });
});

describe('allow rules', () => {
  it('globs: * and ? stay in one component, ** crosses them', () => {
    expect(globToRegExp('/usr/bin/*').test('/usr/bin/ping')).toBe(true);
    expect(globToRegExp('/usr/bin/*').test('/usr/bin/x/y')).toBe(false);
    expect(globToRegExp('/usr/**').test('/usr/bin/x/y')).toBe(true);
    expect(globToRegExp('/usr/**/y').test('/usr/y')).toBe(true);
    expect(globToRegExp('/etc/host?').test('/etc/hosts')).toBe(true);
    expect(globToRegExp('/dev/tty[0-9]').test('/dev/tty5')).toBe(true);
    expect(globToRegExp('/dev/tty[!0-9]').test('/dev/tty5')).toBe(false);
    expect(globToRegExp('/a.b+c(d)').test('/a.b+c(d)')).toBe(true);
    expect(globToRegExp('/a.b').test('/aXb')).toBe(false);
  });

  it('sorts deltas into allowed and kept, and finds stale rules (optional ones excepted)', () => {
    const deltas: Delta[] = [
      { code: 'content', path: '/usr/bin/busybox', field: 'sha256', expected: 'a', actual: 'b' },
      { code: 'mode', path: '/etc/shadow', field: 'mode', expected: '0640', actual: '0644' },
      { code: 'xattr', path: '/usr/bin/ping', field: 'security.capability', expected: '01', actual: undefined },
    ];
    const out = applyAllowRules(deltas, [
      { path: '/usr/bin/*', code: 'content', reason: 'host busybox' },
      { path: '/usr/bin/ping', field: 'security.capability', reason: 'cap dropped on purpose' },
      { path: '/nothing/**', code: 'mode', reason: 'stale' },
      { path: '/maybe', code: 'content', reason: 'host-dependent', optional: true },
    ]);
    expect(out.allowed.map((a) => [a.delta.path, a.rule])).toEqual([['/usr/bin/busybox', 0], ['/usr/bin/ping', 1]]);
    expect(out.kept.map((d) => d.path)).toEqual(['/etc/shadow']);
    expect(out.stale).toEqual([2]);
  });

  it('refuses a rule without a reason, or with neither code nor field', () => {
    const r = parseAllowText(JSON.stringify({ format: 'part-image-golden-allow/1', allow: [{ path: '/x', code: 'mode' }, { path: '/y', reason: 'r' }] }), 'a.json');
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.message).toContain("/allow/0: must have required property 'reason'");
      expect(r.message).toContain("/allow/1: must have required property 'code'");
    }
  });
});

describe('golden stage through the CLI', () => {
  it('the demo image matches the repo golden file golden/demo.manifest.json', async () => {
    const r = await build(demoTar, 'demo', '--golden', GOLDEN, '--golden-allow', ALLOW);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    const g = await stage('demo');
    expect(g.status).toBe('passed');
    expect(g.findings).toEqual([]);
    expect(g.details.compared).toBe(29);
    expect(r.stdout).toMatch(/PASS {2}golden .* 29 entries compared with .*demo\.manifest\.json, 0 differences/);
  });

  it('demo.allow.json lets another host\'s busybox through, and only its content', async () => {
    const tree = join(work, 'other-busybox');
    await execa('cp', ['-a', demoDir, tree]);
    // Another busybox build: other bytes, other size; the hardlink /usr/bin/ping follows.
    await writeFile(join(tree, 'usr/bin/busybox'), Buffer.concat([await readFile(join(tree, 'usr/bin/busybox')), Buffer.from('other build')]));
    const without = await build(tree, 'otherbb-strict', '--golden', GOLDEN);
    expect(without.exitCode).toBe(1);
    expect((await stage('otherbb-strict')).findings.map((f: { code: string; path: string }) => `${f.code} ${f.path}`))
      .toEqual(['content /usr/bin/busybox', 'content /usr/bin/ping']);
    const withAllow = await build(tree, 'otherbb', '--golden', GOLDEN, '--golden-allow', ALLOW);
    expect(withAllow.exitCode, withAllow.stdout).toBe(0);
    expect((await stage('otherbb')).details.allowed.map((a: { path: string }) => a.path)).toEqual(['/usr/bin/busybox', '/usr/bin/ping']);
    // The rule covers content only: a mode change of busybox is still a mismatch.
    await chmod(join(tree, 'usr/bin/busybox'), 0o700);
    const mode = await build(tree, 'otherbb-mode', '--golden', GOLDEN, '--golden-allow', ALLOW);
    expect(mode.exitCode).toBe(1);
    expect((await stage('otherbb-mode')).findings.map((f: { code: string; path: string }) => `${f.code} ${f.path}`))
      .toEqual(['mode /usr/bin/busybox', 'mode /usr/bin/ping']);
  });

  it('is skipped (not applicable) without --golden', async () => {
    const r = await build(demoTar, 'nogolden');
    expect(r.exitCode).toBe(0);
    const g = await stage('nogolden');
    expect(g).toMatchObject({ status: 'skipped', skippedBy: 'not-applicable' });
  });

  it('rejects an image with one chmod-ed file, naming path, field, golden and image values', async () => {
    const tree = join(work, 'chmod-tree');
    await execa('cp', ['-a', demoDir, tree]);
    await chmod(join(tree, 'etc/os-release'), 0o600);
    const r = await build(tree, 'chmod', '--golden', GOLDEN, '--golden-allow', ALLOW);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain('FAIL  golden');
    expect(r.stdout).toContain('- [mode] /etc/os-release: mode differs from the golden manifest: golden 0644, image 0600');
    expect(r.stdout).toMatch(/REJECTED/);
    const g = await stage('chmod');
    expect(g.findings).toEqual([{
      code: 'mode', path: '/etc/os-release', field: 'mode', expected: '0644', actual: '0600',
      message: '/etc/os-release: mode differs from the golden manifest: golden 0644, image 0600',
    }]);
    // The diff stage against its own input passes: only the golden file knows the mode was 0644.
    expect((await stage('chmod', 'diff')).status).toBe('passed');
  });

  it('allows a listed difference and keeps its reason; a rule that matches nothing fails as stale', async () => {
    const tree = join(work, 'chmod-tree');
    const allow = join(work, 'allow.json');
    await writeFile(allow, JSON.stringify({
      format: 'part-image-golden-allow/1',
      allow: [
        { path: '/etc/os-*', code: 'mode', reason: 'os-release is private on this build' },
        { path: '/usr/bin/busybox', code: 'content', optional: true, reason: 'host busybox' },
      ],
    }));
    const ok = await build(tree, 'allowed', '--golden', GOLDEN, '--golden-allow', allow);
    expect(ok.exitCode, ok.stdout).toBe(0);
    const g = await stage('allowed');
    expect(g.details.allowed).toEqual([{ path: '/etc/os-release', code: 'mode', field: 'mode', reason: 'os-release is private on this build' }]);
    expect(ok.stdout).toContain('1 allowed');

    await writeFile(allow, JSON.stringify({
      format: 'part-image-golden-allow/1',
      allow: [{ path: '/etc/shadow', field: 'mode', reason: 'was needed once' }],
    }));
    const stale = await build(demoTar, 'stale', '--golden', GOLDEN, '--golden-allow', allow);
    expect(stale.exitCode).toBe(1);
    const s = await stage('stale');
    expect(s.findings).toHaveLength(1);
    expect(s.findings[0]).toMatchObject({ code: 'golden-allow-stale', path: '/etc/shadow', field: 'mode' });
    expect(s.findings[0].message).toContain('rule #1 (/etc/shadow, field mode)');
    expect(s.findings[0].message).toContain('matched no difference');
  });

  it('--update-golden writes a missing file, and shows the changes before refreshing one', async () => {
    const file = join(work, 'fresh.manifest.json');
    const missing = await build(demoTar, 'missing', '--golden', file);
    expect(missing.exitCode).toBe(1);
    expect((await stage('missing')).findings[0].code).toBe('golden-missing');
    expect((await stage('missing')).findings[0].message).toContain('--update-golden');

    const w = await build(demoTar, 'write', '--golden', file, '--update-golden');
    expect(w.exitCode).toBe(0);
    expect(w.stderr).toContain(`golden: wrote ${file} (29 entries)`);
    // Made on the same host, it is byte for byte the repo's file.
    expect(await readFile(file, 'utf8')).toBe(await readFile(GOLDEN, 'utf8'));

    const tree = join(work, 'chmod-tree');
    const u = await build(tree, 'update', '--golden', file, '--update-golden');
    expect(u.exitCode).toBe(0);
    expect(u.stderr).toContain(`golden: ${file} changes (golden -> image):`);
    expect(u.stderr).toContain('~ /etc/os-release\n      mode  0644 -> 0600');
    expect(await readFile(file, 'utf8')).toContain('{"path":"/etc/os-release","type":"file","mode":"0600"');
    const again = await build(tree, 'again', '--golden', file);
    expect(again.exitCode).toBe(0);
  });

  it('reports an unusable golden or allow file as a failing finding', async () => {
    const bad = join(work, 'bad.manifest.json');
    await writeFile(bad, '{"format":"part-image-manifest/1","entries":[{"path":"x"}]}');
    const r = await build(demoTar, 'bad', '--golden', bad);
    expect(r.exitCode).toBe(1);
    const g = await stage('bad');
    expect(g.findings[0].code).toBe('golden-invalid');
    expect(g.findings[0].message).toContain('schema/manifest.schema.json');

    const crlf = join(work, 'crlf.manifest.json');
    await writeFile(crlf, (await readFile(GOLDEN, 'utf8')).replace(/\n/g, '\r\n'));
    const c = await build(demoTar, 'crlf', '--golden', crlf, '--golden-allow', ALLOW);
    expect(c.exitCode).toBe(1);
    expect((await stage('crlf')).findings.map((f: { code: string }) => f.code)).toEqual(['golden-not-canonical']);

    const allow = join(work, 'bad-allow.json');
    await copyFile(GOLDEN, allow);
    const a = await build(demoTar, 'badallow', '--golden', GOLDEN, '--golden-allow', allow);
    expect(a.exitCode).toBe(1);
    expect((await stage('badallow')).findings[0].code).toBe('golden-allow-invalid');
  });
});
