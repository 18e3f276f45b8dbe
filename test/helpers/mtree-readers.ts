// The three real readers of mtree files, run the way a user would run them
// against an mtree file and a folder (a loop mount, or a tree):
// - go-mtree 0.4.4 (Debian's golang-github-vbatts-go-mtree-dev), through the
//   small checker in test/fixtures/go-mtree-check, built here with Debian's
//   Go, offline, once per source version (cached beside the Debian root);
// - NetBSD mtree (mtree-netbsd): `mtree -f SPEC -p DIR`;
// - bsdtar (libarchive-tools), which has no check mode: it reads the spec and
//   the folder, each written back by its own mtree writer with one keyword
//   set, and the two are compared line by line.
// A missing tool is an error naming the package, never a skip.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { cacheDir } from './debian-root.js';

export interface ReaderResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface GoMtreeDelta {
  type: 'missing' | 'extra' | 'modified' | 'same';
  path: string;
  keys?: { type: string; name: string; old?: string; new?: string }[];
}

const CHECKER_SOURCE = fileURLToPath(new URL('../fixtures/go-mtree-check/main.go', import.meta.url));
/** Where Debian's golang-*-dev packages put their sources: the GOPATH of an offline build. */
const DEBIAN_GOPATH = '/usr/share/gocode';
const GO_MTREE_SRC = `${DEBIAN_GOPATH}/src/github.com/vbatts/go-mtree`;

async function run(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Promise<ReaderResult> {
  const r = await execa(cmd, args, { reject: false, cwd: opts.cwd, env: opts.env, stripFinalNewline: false });
  if ((r as { code?: string }).code === 'ENOENT') throw new Error(`${cmd} is missing: run .ci/setup as root`);
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

let checker: Promise<string> | undefined;

/** The built go-mtree checker's path; builds it on first use. */
export function goMtreeChecker(): Promise<string> {
  checker ??= (async () => {
    if (!existsSync(GO_MTREE_SRC)) throw new Error(`go-mtree's sources are missing (${GO_MTREE_SRC}): apt-get install golang-github-vbatts-go-mtree-dev (.ci/setup does)`);
    const source = await readFile(CHECKER_SOURCE);
    const version = createHash('sha256').update(source).update(await readFile(join(GO_MTREE_SRC, 'version.go'))).digest('hex').slice(0, 16);
    const dir = join(cacheDir(), 'go-mtree-check');
    const bin = join(dir, `go-mtree-check-${version}`);
    if (existsSync(bin)) return bin;
    await mkdir(dir, { recursive: true });
    const tmp = `${bin}.${process.pid}.tmp`;
    const env = { ...process.env, GO111MODULE: 'off', GOPATH: DEBIAN_GOPATH, GOFLAGS: '', GOPROXY: 'off', GOCACHE: join(dir, 'go-build') } as Record<string, string>;
    const r = await run('go', ['build', '-o', tmp, CHECKER_SOURCE], { env, cwd: dir }).catch((e: Error) => {
      throw new Error(`${e.message} (go: apt-get install golang-go)`);
    });
    if (r.exitCode !== 0) {
      await rm(tmp, { force: true });
      throw new Error(`building the go-mtree checker failed (exit ${r.exitCode}):\n${r.stderr}`);
    }
    await rename(tmp, bin);
    return bin;
  })();
  return checker;
}

/** go-mtree's Check of DIR against SPEC: exit 0 same, 1 differences (in `deltas`), 2 an error (stderr). */
export async function goMtreeCheck(spec: string, dir: string, keywords?: readonly string[]): Promise<ReaderResult & { deltas: GoMtreeDelta[] }> {
  const r = await run(await goMtreeChecker(), ['-f', spec, '-p', dir, ...(keywords ? ['-k', keywords.join(',')] : [])]);
  const deltas = r.exitCode === 0 || r.exitCode === 1 ? (JSON.parse(r.stdout) as GoMtreeDelta[]) : [];
  return { ...r, deltas };
}

/** The spec go-mtree itself writes for DIR (its Walk + WriteTo), with its default keywords unless given. */
export async function goMtreeCreate(dir: string, keywords?: readonly string[]): Promise<string> {
  const r = await run(await goMtreeChecker(), ['-c', '-p', dir, ...(keywords ? ['-k', keywords.join(',')] : [])]);
  if (r.exitCode !== 0) throw new Error(`go-mtree could not describe ${dir}: ${r.stderr}`);
  return r.stdout;
}

/** NetBSD mtree's check of DIR against SPEC: exit 0 same, 2 differences (on stdout), 1 an error. */
export function netbsdMtreeCheck(spec: string, dir: string): Promise<ReaderResult> {
  return run('mtree', ['-f', spec, '-p', dir]);
}

/** bsdtar's listing of SPEC (`bsdtar -tvf`), which reads every entry or says why not. */
export function bsdtarList(spec: string): Promise<ReaderResult> {
  return run('bsdtar', ['-tvf', spec, '--numeric-owner']);
}

/** The keywords bsdtar compares: those it can take from a spec without the files' data. */
export const BSDTAR_KEYWORDS = ['type', 'mode', 'uid', 'gid', 'size', 'link', 'device'];

/**
 * bsdtar's view of SPEC against DIR: both written back by bsdtar's mtree
 * writer with `keywords` (default BSDTAR_KEYWORDS; leave out device for a
 * spec without it, or bsdtar writes 0,0), one full line per entry; `onlySpec` and
 * `onlyDir` are the lines that differ. exitCode is bsdtar's worst.
 */
export async function bsdtarCompare(spec: string, dir: string, keywords: readonly string[] = BSDTAR_KEYWORDS): Promise<ReaderResult & { onlySpec: string[]; onlyDir: string[] }> {
  const options = ['!all', ...keywords, '!use-set'].join(',');
  // Run from an empty folder: bsdtar's mtree reader opens the files a spec names, relative to the cwd.
  const empty = join(cacheDir(), 'go-mtree-check', `empty-${process.pid}`);
  await mkdir(empty, { recursive: true });
  const fromSpec = await run('bsdtar', ['-cf', '-', '--format=mtree', '--options', options, `@${spec}`], { cwd: empty });
  const fromDir = await run('bsdtar', ['-cf', '-', '--format=mtree', '--options', options, '-C', dir, '.']);
  await rm(empty, { recursive: true, force: true });
  const lines = (s: string) => new Set(s.split('\n').filter((l) => l && !l.startsWith('#')));
  const a = lines(fromSpec.stdout);
  const b = lines(fromDir.stdout);
  return {
    exitCode: Math.max(fromSpec.exitCode, fromDir.exitCode),
    stdout: fromSpec.stdout,
    stderr: fromSpec.stderr + fromDir.stderr,
    onlySpec: [...a].filter((l) => !b.has(l)),
    onlyDir: [...b].filter((l) => !a.has(l)),
  };
}
