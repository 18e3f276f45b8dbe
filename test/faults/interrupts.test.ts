// The interrupt fault matrix (issue 8, §3 and §5): real Debian-root builds
// (from the cached tar, from a directory, to raw and to qcow2) interrupted by
// SIGINT, SIGTERM and SIGHUP at many observed points of read, build/populate,
// fsck, readback, diff, diagnose, nspawn and convert; a second signal during
// cleanup. After each: exit 130 (or the verdict, when the run ended before the
// signal was due), and the host state of the case: nothing in its private
// TMPDIR, nothing beside its output but an accepted image, no loop device,
// mount or process naming its paths.
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { debianRootTar } from '../helpers/debian-root.js';
import { isClean, leftovers, loopsUnder, mountsUnder, type Leftovers } from '../helpers/host-state.js';
import { runAndInterrupt, type InterruptPlan, type Marker } from '../helpers/interrupt.js';
import { RAM_PARENT } from '../../src/input/tar-staging.js';

interface Case {
  name: string;
  input: 'tar' | 'dir';
  format?: 'raw' | 'qcow2';
  marker: Marker | ((tmp: string, out: string) => Marker);
  delayMs?: number;
  signals: NodeJS.Signals[];
  gapMs?: number;
  extra?: string[];
}

// Markers: --verbose prints every host command ("+ ...") and each step's end ("  NAME: N ms").
const inTmp = (file: RegExp) => (tmp: string): Marker => ({ file, in: tmp });
const besideOut = (file: RegExp) => (_tmp: string, out: string): Marker => ({ file, in: out });
const STAGING = inTmp(/^part-image-tar-/);
// The build's first mke2fs is its sizing round (on the temp image itself); each host command may lead with VAR=value words.
const SIZING = { stderr: /^\+ .*\bmke2fs /m };
const TMP_IMAGE = besideOut(/\.part-image-.*\.tmp$/);
const POPULATE = { stderr: /exec debugfs .* -w -f / };
const FSCK = { stderr: /^\+ (?:\w+=\S* )*e2fsck /m };
const READBACK = { stderr: /^ {2}fsck: \d+ ms/m };
const DIFF = { stderr: /^ {2}readback: \d+ ms/m };
const DIAGNOSE = { stderr: /^ {2}freespace: \d+ ms/m };
const LOOP_MOUNT = { stderr: /\+ mount -o loop/ };
const NSPAWN = { stderr: /systemd-nspawn --quiet/ };
const CONVERT = { stderr: /\+ qemu-img convert/ };
const GETFATTR = { stderr: /\+ .*getfattr / };

const CASES: Case[] = [
  { name: 'tar: read, staging folder just made (SIGINT)', input: 'tar', marker: STAGING, signals: ['SIGINT'] },
  { name: 'tar: read, 0.5 s in (SIGTERM)', input: 'tar', marker: STAGING, delayMs: 500, signals: ['SIGTERM'] },
  { name: 'tar: read, 2 s in (SIGHUP)', input: 'tar', marker: STAGING, delayMs: 2000, signals: ['SIGHUP'] },
  { name: 'tar: sizing mke2fs (SIGINT)', input: 'tar', marker: SIZING, signals: ['SIGINT'] },
  { name: 'tar: temp image beside the output appears (SIGTERM)', input: 'tar', marker: TMP_IMAGE, signals: ['SIGTERM'] },
  { name: 'tar: populate starts (SIGINT)', input: 'tar', marker: POPULATE, signals: ['SIGINT'] },
  { name: 'tar: populate, 0.3 s in (SIGTERM)', input: 'tar', marker: POPULATE, delayMs: 300, signals: ['SIGTERM'] },
  { name: 'tar: populate, 0.8 s in (SIGINT)', input: 'tar', marker: POPULATE, delayMs: 800, signals: ['SIGINT'] },
  { name: 'tar: populate, 1.5 s in (SIGHUP)', input: 'tar', marker: POPULATE, delayMs: 1500, signals: ['SIGHUP'] },
  { name: 'tar: populate, SIGINT then a second SIGINT 0.2 s later', input: 'tar', marker: POPULATE, delayMs: 500, signals: ['SIGINT', 'SIGINT'] },
  { name: 'tar: populate, SIGTERM then SIGINT at once', input: 'tar', marker: POPULATE, delayMs: 200, signals: ['SIGTERM', 'SIGINT'], gapMs: 1 },
  { name: 'tar: fsck (SIGTERM)', input: 'tar', marker: FSCK, signals: ['SIGTERM'] },
  { name: 'tar: readback starts (SIGINT)', input: 'tar', marker: READBACK, signals: ['SIGINT'] },
  { name: 'tar: readback, 1 s in (SIGTERM)', input: 'tar', marker: READBACK, delayMs: 1000, signals: ['SIGTERM'] },
  { name: 'tar: readback, 0.6 s in (SIGHUP)', input: 'tar', marker: READBACK, delayMs: 600, signals: ['SIGHUP'] },
  { name: 'tar: diff (SIGINT)', input: 'tar', marker: DIFF, signals: ['SIGINT'] },
  { name: 'tar: diagnose (SIGTERM)', input: 'tar', marker: DIAGNOSE, signals: ['SIGTERM'] },
  { name: 'tar: loop mount for nspawn (SIGINT)', input: 'tar', marker: LOOP_MOUNT, signals: ['SIGINT'] },
  { name: 'tar: nspawn boot, 0.5 s in (SIGTERM)', input: 'tar', marker: NSPAWN, delayMs: 500, signals: ['SIGTERM'] },
  { name: 'tar: nspawn boot, 1.5 s in (SIGHUP)', input: 'tar', marker: NSPAWN, delayMs: 1500, signals: ['SIGHUP'] },
  { name: 'tar -> qcow2: convert starts (SIGINT)', input: 'tar', format: 'qcow2', marker: CONVERT, signals: ['SIGINT'], extra: ['--skip', 'diagnose,nspawn'] },
  { name: 'tar -> qcow2: convert, 0.3 s in (SIGTERM)', input: 'tar', format: 'qcow2', marker: CONVERT, delayMs: 300, signals: ['SIGTERM'], extra: ['--skip', 'diagnose,nspawn'] },
  { name: 'dir: read, getfattr starts (SIGINT)', input: 'dir', marker: GETFATTR, signals: ['SIGINT'] },
  { name: 'dir: read, 0.3 s after getfattr started (SIGTERM)', input: 'dir', marker: GETFATTR, delayMs: 300, signals: ['SIGTERM'] },
  { name: 'dir: populate, 0.5 s in (SIGTERM)', input: 'dir', marker: POPULATE, delayMs: 500, signals: ['SIGTERM'] },
  { name: 'dir: readback, 0.5 s in (SIGHUP)', input: 'dir', marker: READBACK, delayMs: 500, signals: ['SIGHUP'] },
];

let tar: string;
let dirInput: string;
let work: string;
const summary: string[] = [];

async function forceRelease(roots: string[]): Promise<void> {
  for (const m of (await mountsUnder(roots)).reverse()) await execa('umount', ['-l', m], { reject: false });
  for (const l of await loopsUnder(roots)) await execa('losetup', ['-d', l.split(/\s+/)[0]], { reject: false });
}

function describeLeft(l: Leftovers): string {
  return Object.entries(l).filter(([, v]) => (v as string[]).length).map(([k, v]) => `${k}: ${(v as string[]).join(', ')}`).join('; ');
}

beforeAll(async () => {
  tar = await debianRootTar();
  work = await mkdtemp(join(tmpdir(), 'pi-interrupts-'));
  dirInput = join(work, 'root');
  await mkdir(dirInput);
  await execa('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', tar, '-C', dirInput]);
});

afterAll(async () => {
  process.stdout.write(`\ninterrupt matrix:\n${summary.join('\n')}\n`);
  if (work) {
    await forceRelease([work]);
    await rm(work, { recursive: true, force: true });
  }
});

/** The output is a complete image: e2fsck passes on a raw one, qemu-img check on a converted one. */
async function isWholeImage(path: string, format: string): Promise<boolean> {
  const r = format === 'raw' ? await execa('e2fsck', ['-fn', path], { reject: false }) : await execa('qemu-img', ['check', '-f', format, path], { reject: false });
  return r.exitCode === 0;
}

describe('interrupts at every stage of a real Debian-root build leave nothing behind', () => {
  for (const [i, c] of CASES.entries()) {
    it(c.name, async () => {
      const caseDir = join(work, `case-${i}`);
      const tmp = join(caseDir, 'tmp');
      const out = join(caseDir, 'out');
      await mkdir(tmp, { recursive: true });
      await mkdir(out, { recursive: true });
      const format = c.format ?? 'raw';
      const output = join(out, `root.${format === 'raw' ? 'raw' : format}`);
      const marker = typeof c.marker === 'function' ? c.marker(tmp, out) : c.marker;
      const plan: InterruptPlan = { marker, delayMs: c.delayMs, signals: c.signals, gapMs: c.gapMs };
      const args = ['build', '--input', c.input === 'tar' ? tar : dirInput, '--output', output, '--format', format, '--verbose', ...(c.extra ?? [])];
      const r = await runAndInterrupt(args, { TMPDIR: tmp }, plan);
      // A signal that lands after the image was accepted and renamed (the
      // stage it aimed at was over already) finds a finished run: the output
      // may stand then, but only as a whole, checked image.
      const lateAccepted = r.exitCode === 130 && existsSync(output) && (await isWholeImage(output, format));
      const accepted = r.exitCode === 0 || lateAccepted ? [`root.${format}`] : r.exitCode === 1 ? [`root.${format}.rejected`] : [];
      const left = await leftovers(tmp, out, accepted);
      // The tar's small files are staged in RAM (tar-staging.ts): that folder goes too.
      const ram = (await readdir(RAM_PARENT).catch(() => [] as string[])).filter((n) => n.startsWith(`part-image-tar-${r.pid}-`));
      const verdict = r.signal ? `killed by ${r.signal}` : `exit ${r.exitCode}`;
      summary.push(`${String(i + 1).padStart(2)}. ${c.name}: signal at ${r.atMs} ms, ${r.finishedFirst ? 'finished first, ' : ''}${lateAccepted ? 'accepted before the signal, ' : ''}${verdict}, ${isClean(left) ? 'clean' : `LEFT ${describeLeft(left)}`}`);
      await forceRelease([caseDir]);
      await rm(caseDir, { recursive: true, force: true });

      // A marker that never appears would make the case test nothing.
      expect(r.markerSeen, `the marker of "${c.name}" never appeared:\n${r.stderr.slice(-2000)}`).toBe(true);
      if (!r.finishedFirst) {
        expect({ exitCode: r.exitCode, signal: r.signal }, r.stderr.slice(-2000)).toEqual({ exitCode: 130, signal: undefined });
        expect(r.stderr).toContain('cleaning up');
      }
      expect(left, r.stderr.slice(-2000)).toEqual({ tmp: [], beside: [], loops: [], mounts: [], processes: [] });
      expect(ram, `left in ${RAM_PARENT}`).toEqual([]);
    }, 180_000);
  }
});
