// e2fsck -fn: a forced, read-only check. Its exit status is a bit mask, and
// it can print a warning and still exit 0 (a file shorter than the block
// count, a journal it did not replay, wrong summary counts): every message it
// prints is kept, and the fsck stage treats each one as a finding unless
// HARMLESS below says why the kernel does not care.
import { run } from '../exec.js';

export interface FsckMessage {
  /** e2fsck's own words; a multi-line message joined with "; ", without the "Fix? no" prompt. */
  text: string;
  /** Why the message does not count against the image (from HARMLESS); absent for a finding. */
  harmless?: string;
}

export interface FsckResult {
  exitCode: number;
  /** Decoded bits of the exit status. */
  meaning: string[];
  /** Every message e2fsck printed about the filesystem, in order. */
  messages: FsckMessage[];
  /** The texts of the messages that are not harmless: the problems. */
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

/**
 * Messages e2fsck -n prints that say nothing about what the kernel reads from
 * the filesystem. Only these may appear in a passing check; anything else
 * e2fsck prints fails the stage, exit 0 or not. Each entry gives its reason.
 */
export const HARMLESS: readonly { pattern: RegExp; reason: string }[] = [
  {
    // PR_5_FREE_BLOCK_COUNT / PR_5_FREE_INODE_COUNT (e2fsck/problem.c, PR_NO_OK): the
    // filesystem-wide totals only, not the per-group counts ("... for group #N"), which stay findings.
    pattern: /^Free (blocks|inodes) count wrong \(\d+, counted=\d+\)\.$/,
    reason: 'the superblock\'s free block/inode totals: ext4 updates them lazily and the kernel recounts them from the group descriptors at mount; no file is affected',
  },
  {
    // PR_0_FUTURE_SB_LAST_MOUNT / PR_0_FUTURE_SB_LAST_WRITE (and their *_FUDGED forms).
    pattern: /^Superblock last (mount|write) time( \([^)]*\)| is in the future)/,
    reason: 'a superblock time stamp ahead of this host\'s clock (clock skew between the building host and this one): the kernel mounts the filesystem and no file is affected',
  },
];

export function buildE2fsckArgs(image: string): string[] {
  return ['-f', '-n', image];
}

export function decodeFsckExit(code: number): string[] {
  return code === 0 ? ['clean'] : BITS.filter(([bit]) => code & bit).map(([, m]) => m);
}

// With -n every question is answered "no": on a line of its own ("Fix? no"),
// or at the end of the message's last line ("... inode 13.  Clear? no"). The
// questions are e2fsck's fixed list (prompt[] in e2fsck/problem.c).
const PROMPTS = [
  'Fix', 'Clear', 'Relocate', 'Allocate', 'Expand', 'Connect to /lost\\+found', 'Create', 'Salvage', 'Truncate',
  'Clear inode', 'Abort', 'Split', 'Continue', 'Clone multiply-claimed blocks', 'Delete file', 'Suppress messages',
  'Unlink', 'Clear HTree index', 'Recreate', 'Optimize', 'Clear flag',
].join('|');
const PROMPT_LINE = new RegExp(`^(${PROMPTS})\\? no$`);
const PROMPT_TAIL = new RegExp(`\\s+(${PROMPTS})\\? no$`);
const BANNER = /^e2fsck \d+\.\d+/;
const PASS = /^Pass \d[A-Z]?: /;
const SUMMARY = /^[^\s:][^:]*: \d+\/\d+ files \(/;
// "\n%s: ********** WARNING: Filesystem still has errors **********\n": the exit status says it.
const STILL_ERRORS = /\*{5,} WARNING: Filesystem still has errors \*{5,}$/;

/**
 * Splits e2fsck's output into messages: a message ends at its prompt or at a
 * blank line; a line that starts with white space continues the line before.
 * The banner, the "Pass N:" headings and the summary line are not messages.
 */
export function parseE2fsckOutput(exitCode: number, stdout: string, stderr: string): FsckResult {
  const lines = `${stdout}\n${stderr}`.split('\n').map((l) => l.trimEnd());
  const summary = lines.find((l) => SUMMARY.test(l));
  const texts: string[] = [];
  let current: string[] = [];
  const end = () => {
    if (current.length) texts.push(current.join('; '));
    current = [];
  };
  for (const line of lines) {
    if (line === '' || BANNER.test(line) || PASS.test(line) || SUMMARY.test(line) || STILL_ERRORS.test(line)) {
      end();
      continue;
    }
    if (PROMPT_LINE.test(line)) {
      end();
      continue;
    }
    const prompted = PROMPT_TAIL.test(line);
    const text = line.replace(PROMPT_TAIL, '').trim();
    if (/^\s/.test(line) && current.length) current[current.length - 1] += ` ${text}`;
    else current.push(text);
    if (prompted) end();
  }
  end();
  const messages = texts.map((text): FsckMessage => {
    const rule = HARMLESS.find((h) => h.pattern.test(text));
    return rule ? { text, harmless: rule.reason } : { text };
  });
  return {
    exitCode,
    meaning: decodeFsckExit(exitCode),
    messages,
    problems: messages.filter((m) => !m.harmless).map((m) => m.text),
    summary,
  };
}

export async function e2fsck(image: string): Promise<FsckResult> {
  // Every status is an answer here; the stage decides what fails. The parser
  // knows e2fsck's English words: a translated message would not match
  // HARMLESS and so would fail the check, never pass it; LC_ALL=C keeps it English.
  const r = await run('e2fsck', buildE2fsckArgs(image), { okCodes: 'any', env: { LC_ALL: 'C', LANGUAGE: '' } });
  return parseE2fsckOutput(r.exitCode, r.stdout, r.stderr);
}
