// e2fsck -fn: a forced, read-only check. Its exit status is a bit mask.
import { run } from '../exec.js';

export interface FsckResult {
  exitCode: number;
  /** Decoded bits of the exit status. */
  meaning: string[];
  /** The lines that report a problem (e2fsck's own words). */
  problems: string[];
  /** The closing summary line, e.g. "root: 11/8192 files (0.0% non-contiguous), ...". */
  summary?: string;
}

const BITS: [number, string][] = [
  [1, 'errors corrected'],
  [2, 'errors corrected, reboot needed'],
  [4, 'errors left uncorrected'],
  [8, 'operational error'],
  [16, 'usage or syntax error'],
  [32, 'cancelled by user'],
  [128, 'shared library error'],
];

export function buildE2fsckArgs(image: string): string[] {
  return ['-f', '-n', image];
}

export function decodeFsckExit(code: number): string[] {
  return code === 0 ? ['clean'] : BITS.filter(([bit]) => code & bit).map(([, m]) => m);
}

// With -n every question is answered "no" on a line of its own.
const PROMPT = /^[A-Z][\w ]*\? no$/;
const NOISE = /^(e2fsck \d|Pass \d[A-Z]?:|[^\s:]+: \d+\/\d+ files|$)/;

export function parseE2fsckOutput(exitCode: number, stdout: string, stderr: string): FsckResult {
  const lines = `${stdout}\n${stderr}`.split('\n').map((l) => l.trimEnd());
  const summary = lines.find((l) => /: \d+\/\d+ files \(/.test(l));
  const problems = lines.filter((l) => !NOISE.test(l) && !PROMPT.test(l) && !/\*{5,} WARNING/.test(l));
  return { exitCode, meaning: decodeFsckExit(exitCode), problems, summary };
}

export async function e2fsck(image: string): Promise<FsckResult> {
  // Every status is an answer here; the stage decides what fails.
  const r = await run('e2fsck', buildE2fsckArgs(image), { okCodes: Array.from({ length: 256 }, (_, i) => i) });
  return parseE2fsckOutput(r.exitCode, r.stdout, r.stderr);
}
