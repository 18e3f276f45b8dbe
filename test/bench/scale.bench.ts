// The scale benchmark (npm run bench): part-image's stages on generated trees
// of the issue-11 sizes, next to the peers measured in the same run.
//   trees: the Debian root from its tar and from a directory, 10 copies of it
//          (~100k entries), and with PART_IMAGE_BENCH_500K=1 the 10 copies plus
//          400k small files and 3 x 200 MB files (~500k entries)
//   part-image: `part-image build` (the CLI, one process), each stage's time
//          from its JSON report, the wall time and the peak RSS (GNU time)
//   peers: sha256sum of the tar, `mke2fs -d` of the extracted tree at the
//          same size and inode count, e2fsck + loop mount + find + sha256sum + getfattr, and
//          NetBSD `mtree -c -K sha256digest` over the mount
// Every figure is the median of 3 rounds for trees under 200k entries and of
// 1 above (PART_IMAGE_BENCH_RUNS sets it), with a `sync` before each command
// so that the last one's writeback does not land in its time.
// Prints a markdown table and writes the same as JSON (PART_IMAGE_BENCH_JSON,
// else bench-scale.json in the bench folder). Generated trees are kept in
// PART_IMAGE_BENCH_DIR (default $TMPDIR/part-image-bench) for the next run.
// PART_IMAGE_BENCH_CLI runs another build of the CLI (a "before" copy).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { bench, describe } from 'vitest';
import { debianRootTar } from '../helpers/debian-root.js';

const BIG = process.env.PART_IMAGE_BENCH_500K === '1';
const dir = process.env.PART_IMAGE_BENCH_DIR || join(tmpdir(), 'part-image-bench');
const cli = resolve(process.env.PART_IMAGE_BENCH_CLI || 'dist/bin.js');
const jsonOut = process.env.PART_IMAGE_BENCH_JSON || join(dir, 'bench-scale.json');
const SKIP = 'golden,freespace,diagnose,nspawn,portable-lint,portable';

interface Timed { s: number; rssMb: number }

/** Wall seconds and peak RSS (the largest process of the command, as GNU time reports it). */
async function timed(cmd: string, args: string[]): Promise<Timed> {
  const out = join(dir, 'time.out');
  const r = await execa('/usr/bin/time', ['-o', out, '-f', '%e %M', cmd, ...args], { reject: false, stdout: 'ignore', stderr: 'pipe' });
  if (r.exitCode !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.exitCode}: ${String(r.stderr).slice(-2000)}`);
  const [s, kb] = (await readFile(out, 'utf8')).trim().split('\n').at(-1)!.split(' ').map(Number);
  return { s, rssMb: kb / 1024 };
}

const sh = (script: string) => timed('sh', ['-ec', script]);
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

async function once(marker: string, make: () => Promise<void>): Promise<void> {
  if (existsSync(marker)) return;
  await make();
  await writeFile(marker, '');
}

async function extract(tar: string, to: string): Promise<void> {
  await rm(to, { recursive: true, force: true });
  await mkdir(to, { recursive: true });
  await execa('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', tar, '-C', to]);
}

async function tarUp(from: string, tar: string): Promise<void> {
  await execa('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '--sort=name', '-cf', tar, '-C', from, '.']);
}

/** 10 copies of the Debian root, each in a folder of its own. */
async function tenCopies(deb: string, to: string): Promise<void> {
  await rm(to, { recursive: true, force: true });
  await mkdir(to);
  for (let i = 0; i < 10; i++) await execa('cp', ['-a', deb, join(to, `c${i}`)]);
}

/** 400k small files (1-8 KiB, distinct contents) in 400 folders, and 3 files of 200 MB. */
async function smallAndLarge(to: string): Promise<void> {
  for (let d = 0; d < 400; d++) {
    const sub = join(to, 'small', `d${d}`);
    await mkdir(sub, { recursive: true });
    const writes: Promise<void>[] = [];
    for (let f = 0; f < 1000; f++) {
      const n = d * 1000 + f;
      const seed = createHash('sha256').update(String(n)).digest();
      writes.push(writeFile(join(sub, `f${f}`), Buffer.alloc(1024 * (1 + (n % 8)), seed)));
    }
    await Promise.all(writes);
  }
  for (let i = 0; i < 3; i++) {
    await execa('sh', ['-ec', `head -c 200000000 /dev/urandom > ${q(join(to, `large${i}.bin`))}`]);
  }
}

interface Tree { name: string; input: string; tar: string; dir: string }

async function trees(): Promise<Tree[]> {
  await mkdir(dir, { recursive: true });
  const debTar = await debianRootTar();
  const deb = join(dir, 'debian');
  await once(join(dir, 'debian.done'), () => extract(debTar, deb));
  const ten = join(dir, 'ten');
  const tenTar = join(dir, 'ten.tar');
  await once(join(dir, 'ten.done'), async () => {
    await tenCopies(deb, ten);
    await tarUp(ten, tenTar);
  });
  const out: Tree[] = [
    { name: 'Debian root, from its tar', input: debTar, tar: debTar, dir: deb },
    { name: 'Debian root, from a directory', input: deb, tar: debTar, dir: deb },
    { name: '10 copies of it', input: tenTar, tar: tenTar, dir: ten },
  ];
  if (BIG) {
    const big = join(dir, 'big');
    const bigTar = join(dir, 'big.tar');
    await once(join(dir, 'big.done'), async () => {
      await rm(big, { recursive: true, force: true });
      await mkdir(big);
      for (let i = 0; i < 10; i++) await execa('cp', ['-a', join(ten, `c${i}`), join(big, `c${i}`)]);
      await smallAndLarge(big);
      await tarUp(big, bigTar);
    });
    out.push({ name: '+ 400k small files, 3 x 200 MB', input: bigTar, tar: bigTar, dir: big });
  }
  return out;
}

interface Row {
  tree: string; entries: number; mb: number;
  read: number; build: number; fsck: number; readback: number; diff: number; verification: number;
  total: number; peakRssMb: number;
  /** A tar's small files staged in RAM (tmpfs: not in the RSS), MB. */
  ramStagedMb: number;
  sha256sumTar: number; mke2fsD: number; mountWalk: number; mtree: number;
  readVsSha256sum: number; buildVsMke2fs: number; verificationVsMke2fs: number;
  load: string;
  /** How many rounds the medians are of. */
  rounds: number;
}

/** Rounds per tree (medians are reported): PART_IMAGE_BENCH_RUNS, else 3 below 200k entries and 1 above. */
function roundsFor(entries: number): number {
  const n = Number(process.env.PART_IMAGE_BENCH_RUNS);
  if (Number.isInteger(n) && n > 0) return n;
  return entries < 200_000 ? 3 : 1;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Each figure of a tree is the median of its rounds; the ratios are those of the medians. */
async function measure(t: Tree): Promise<Row> {
  const first = await measureOnce(t);
  const all = [first];
  for (let i = 1; i < roundsFor(first.entries); i++) all.push(await measureOnce(t));
  const m = (k: keyof Row) => median(all.map((r) => r[k] as number));
  const verification = m('verification');
  const out: Row = {
    ...first,
    read: m('read'), build: m('build'), fsck: m('fsck'), readback: m('readback'), diff: m('diff'), verification,
    total: m('total'), peakRssMb: m('peakRssMb'), ramStagedMb: m('ramStagedMb'),
    sha256sumTar: m('sha256sumTar'), mke2fsD: m('mke2fsD'), mountWalk: m('mountWalk'), mtree: m('mtree'),
    rounds: all.length,
  };
  out.readVsSha256sum = out.read / out.sha256sumTar;
  out.buildVsMke2fs = out.build / out.mke2fsD;
  out.verificationVsMke2fs = verification / out.mke2fsD;
  return out;
}

/** Settles the page cache's writeback of the last command, so that it does not land in the next one's time. */
const settle = () => execa('sync');

async function measureOnce(t: Tree): Promise<Row> {
  const load = loadavg().map((l) => l.toFixed(1)).join(' ');
  const img = join(dir, 'part.raw');
  const report = join(dir, 'report.json');
  await rm(img, { force: true });
  await settle();
  const pi = await timed('node', [cli, 'build', '--quiet', '--input', t.input, '--output', img, '--report-json', report, '--skip', SKIP]);
  const r = JSON.parse(await readFile(report, 'utf8')) as { stages: { name: string; durationMs: number; details?: { staged?: { ramBytes: number } } }[] };
  const ramStagedMb = Math.round((r.stages.find((s) => s.name === 'read')?.details?.staged?.ramBytes ?? 0) / 2 ** 20);
  const ms = (name: string) => (r.stages.find((s) => s.name === name)?.durationMs ?? NaN) / 1000;
  const sizeMb = Math.round((await stat(img)).size / 2 ** 20);
  // The peer gets as many inodes as part-image's image has: at its default
  // ratio (one per 16 KiB) a tree of many small files does not fit.
  const { stdout: head } = await execa('dumpe2fs', ['-h', img], { env: { LC_ALL: 'C' } });
  const inodes = /^Inode count:\s*(\d+)/m.exec(head)![1];

  await settle();
  const sha = await timed('sha256sum', [t.tar]);
  const mkImg = join(dir, 'mke2fs-d.raw');
  await rm(mkImg, { force: true });
  await settle();
  const mk = await timed('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-m', '0', '-L', 'root', '-N', inodes, '-d', t.dir, mkImg, `${sizeMb}M`]);
  await rm(mkImg, { force: true });
  const mnt = join(dir, 'mnt');
  await mkdir(mnt, { recursive: true });
  await settle();
  const walk = await sh([
    `e2fsck -fn ${q(img)} >/dev/null`,
    `mount -o loop,ro ${q(img)} ${q(mnt)}`,
    `trap 'umount ${q(mnt)}' EXIT`,
    `find ${q(mnt)} -printf '%y %m %U %G %s %n %l\\n' >/dev/null`,
    `find ${q(mnt)} -type f -print0 | xargs -0 -r sha256sum >/dev/null`,
    `getfattr -R -h -d -m - --absolute-names ${q(mnt)} >/dev/null 2>&1 || true`,
  ].join('\n'));
  await execa('mount', ['-o', 'loop,ro', img, mnt]);
  let mt: Timed;
  try {
    mt = await sh(`mtree -c -K sha256digest -p ${q(mnt)} >/dev/null`);
  } finally {
    await execa('umount', [mnt]);
  }
  const { stdout: entries } = await execa('sh', ['-c', `find ${q(t.dir)} | wc -l`]);
  const { stdout: du } = await execa('du', ['-sm', '--apparent-size', t.dir]);
  await rm(img, { force: true });
  const verification = ms('fsck') + ms('readback') + ms('diff');
  return {
    tree: t.name, entries: Number(entries), mb: Number(du.split('\t')[0]),
    read: ms('read'), build: ms('build'), fsck: ms('fsck'), readback: ms('readback'), diff: ms('diff'), verification,
    total: pi.s, peakRssMb: Math.round(pi.rssMb), ramStagedMb,
    sha256sumTar: sha.s, mke2fsD: mk.s, mountWalk: walk.s, mtree: mt.s,
    readVsSha256sum: ms('read') / sha.s, buildVsMke2fs: ms('build') / mk.s, verificationVsMke2fs: verification / mk.s,
    load, rounds: 1,
  };
}

function table(rows: Row[]): string {
  const f = (n: number, d = 2) => n.toFixed(d);
  const lines = [
    '| tree | entries | MB | read | build | fsck | readback | diff | total | peak RSS | RAM staged | sha256sum tar | mke2fs -d | e2fsck+mount+find+sha256sum+getfattr | mtree -K sha256digest | read / sha256sum | build / mke2fs -d | verification / mke2fs -d | rounds | load at start |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|',
  ];
  for (const r of rows) {
    lines.push(`| ${r.tree} | ${r.entries.toLocaleString('en')} | ${r.mb.toLocaleString('en')} | ${f(r.read)} | ${f(r.build)} | ${f(r.fsck)} | ${f(r.readback)} | ${f(r.diff)} | ${f(r.total, 1)} | ${r.peakRssMb} MB | ${r.ramStagedMb} MB | ${f(r.sha256sumTar)} | ${f(r.mke2fsD)} | ${f(r.mountWalk)} | ${f(r.mtree)} | ${f(r.readVsSha256sum)} | ${f(r.buildVsMke2fs)} | ${f(r.verificationVsMke2fs)} | ${r.rounds} | ${r.load} |`);
  }
  if (rows.length >= 2 && rows.at(-1)!.entries > rows[0].entries) {
    const a = rows[0];
    const b = rows.at(-1)!;
    const perEntry = ((b.peakRssMb - a.peakRssMb) * 1024) / (b.entries - a.entries);
    lines.push('', `peak RSS over the Debian root's, per extra entry (${b.tree}): ${perEntry.toFixed(2)} KB`);
  }
  return lines.join('\n');
}

const rows: Row[] = [];
for (const t of await trees()) {
  rows.push(await measure(t));
  // Each row as it comes: a failure later (or an interrupt) keeps what was measured.
  console.log(`\n${table(rows)}\n`);
}
const md = table(rows);
console.log(`\n${md}\n`);
await writeFile(jsonOut, `${JSON.stringify({ cli, cores: availableParallelism(), rows }, null, 2)}\n`);
console.log(`written: ${jsonOut}`);

// vitest bench wants a bench; the figures above are the point of this file.
describe('scale', () => {
  bench('table written', () => undefined, { iterations: 1, time: 0 });
});
