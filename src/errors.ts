// The few error classes of part-image. Each carries the process exit code it
// maps to and a hint that tells the user what to do next. Only bin.ts exits.
//
// One hierarchy, one meaning per exit code:
// - a verdict about the image is never an error: it is a finding of a stage
//   (exit 1 when a stage fails);
// - UsageError, InputError: the user's flags or input are bad (exit 2);
// - EnvironmentError, ToolError: this host cannot do it (exit 3);
// - InterruptedError: a signal arrived, cleanup ran (exit 130);
// - InternalError, and anything that is not a PartImageError: a bug in
//   part-image (exit 4), never a verdict on the image.
//
// UnreadableImageError (an InputError) lives here, below tools/dumpe2fs.ts
// and the image readers, which both raise it.

import type { Finding } from './types.js';

export const EXIT = {
  ok: 0,
  rejected: 1,
  usage: 2,
  environment: 3,
  internal: 4,
  interrupted: 130,
} as const;

/** What kind of error ended a run, as the JSON report names it. */
export type ErrorKind = 'input' | 'environment' | 'interrupted' | 'internal';

export class PartImageError extends Error {
  readonly exitCode: number;
  readonly hint?: string;
  constructor(message: string, exitCode: number, options: { hint?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = new.target.name;
    this.exitCode = exitCode;
    this.hint = options.hint;
  }
}

/** Bad flags or arguments. Exit 2. */
export class UsageError extends PartImageError {
  constructor(message: string, hint = 'Run `part-image --help` for the usage.') {
    super(message, EXIT.usage, { hint });
  }
}

/** The input cannot be used: malformed, escaping, too large for the image. Exit 2. */
export class InputError extends PartImageError {
  constructor(message: string, hint?: string, cause?: unknown) {
    super(message, EXIT.usage, { hint, cause });
  }
}

/**
 * The image cannot be read the way the kernel would read it: a damaged
 * superblock, group descriptor, inode, extent tree or directory, or a file
 * shorter than its filesystem. Bad input (exit 2); a verification stage
 * turns it into an `unreadable` finding instead (see `finding`).
 */
export class UnreadableImageError extends InputError {
  readonly image: string;
  readonly why: string;
  constructor(image: string, why: string, cause?: unknown) {
    super(`${image} is not a readable ext4 image: ${why}; run part-image verify ${image} for the fsck findings`, undefined, cause);
    this.image = image;
    this.why = why;
  }

  /** The finding a verification stage reports for it. */
  get finding(): Finding {
    return { code: 'unreadable', message: `the image cannot be read as the kernel would read it: ${this.why}` };
  }
}

/** The host cannot do it: a missing tool, privilege or VM. Exit 3. */
export class EnvironmentError extends PartImageError {
  constructor(message: string, hint?: string, cause?: unknown) {
    super(message, EXIT.environment, { hint, cause });
  }
}

/** A host tool failed in a way we did not expect. Exit 3, with the command to paste. */
export class ToolError extends PartImageError {
  readonly command: string;
  readonly toolExitCode?: number;
  readonly stderr: string;
  constructor(command: string, toolExitCode: number | undefined, stderr: string, hint?: string) {
    const tail = stderr.trim().split('\n').slice(-8).join('\n');
    super(`command failed (exit ${toolExitCode ?? 'signal'}): ${command}${tail ? `\n${tail}` : ''}`, EXIT.environment, {
      hint: hint ?? 'Run the command above by hand to see the whole output.',
    });
    this.command = command;
    this.toolExitCode = toolExitCode;
    this.stderr = stderr;
  }
}

/**
 * A bug in part-image: an exception it did not expect (a TypeError, a broken
 * invariant). Exit 4; the report says in which stage and where in the code.
 */
export class InternalError extends PartImageError {
  /** The stage (or pipeline step) that was running. */
  readonly stage?: string;
  /** The top frames of the original stack: where in part-image it broke. */
  readonly where?: string;
  constructor(message: string, options: { stage?: string; cause?: unknown } = {}) {
    super(message, EXIT.internal, {
      hint: 'This is a bug in part-image, not a verdict on the image; please report it with the command you ran and the JSON report (--report-json).',
      cause: options.cause,
    });
    this.stage = options.stage;
    this.where = stackWhere(options.cause) ?? stackWhere(this);
  }
}

/** errno codes that say the host refused (permissions, space, I/O), not that part-image is wrong. */
const HOST_ERRNO: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only filesystem',
  ENOSPC: 'no space left on the filesystem',
  EDQUOT: 'disk quota exceeded',
  EIO: 'I/O error',
  EMFILE: 'too many open files in this process',
  ENFILE: 'too many open files on the system',
  ENOMEM: 'out of memory',
};

/** A system error of the host (fs.writeFile on a read-only folder, say) as an EnvironmentError naming the path. */
export function hostErrorOf(err: unknown): EnvironmentError | undefined {
  const e = err as NodeJS.ErrnoException | undefined;
  const what = e?.code ? HOST_ERRNO[e.code] : undefined;
  if (!what) return undefined;
  const path = e?.path ? ` ${e.path}` : '';
  return new EnvironmentError(`the host refused to ${e?.syscall ?? 'access'}${path}: ${what} (${e?.code})`,
    e?.code === 'ENOSPC' || e?.code === 'EDQUOT' ? 'Free some space there, or choose another folder.'
      : e?.code === 'EACCES' || e?.code === 'EPERM' || e?.code === 'EROFS' ? 'Choose a folder this user can write to, or fix its permissions.'
        : 'Check the host, then run again.', err);
}

/** Wraps anything that is not one of ours: a host refusal as an EnvironmentError, the rest as an InternalError. */
export function asPartImageError(err: unknown, stage?: string): PartImageError {
  if (err instanceof PartImageError) return err;
  const host = hostErrorOf(err);
  if (host) return host;
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return new InternalError(`internal error${stage ? ` in the ${stage} stage` : ''}: ${message}`, { stage, cause: err });
}

export function errorKind(err: PartImageError): ErrorKind {
  if (err instanceof InterruptedError) return 'interrupted';
  if (err.exitCode === EXIT.usage) return 'input';
  if (err.exitCode === EXIT.environment) return 'environment';
  return 'internal';
}

/** The first frames of a stack, without the message line: "at fn (src/x.ts:12:3)". */
function stackWhere(err: unknown): string | undefined {
  const stack = err instanceof Error ? err.stack : undefined;
  if (!stack) return undefined;
  const frames = stack.split('\n').filter((l) => /^\s+at /.test(l)).slice(0, 4).map((l) => l.trim());
  return frames.length ? frames.join('\n') : undefined;
}

/** SIGINT/SIGTERM arrived; cleanup has run. Exit 130. */
export class InterruptedError extends PartImageError {
  constructor(signal: string) {
    super(`interrupted by ${signal}; temporary files, mounts and loop devices were released`, EXIT.interrupted);
  }
}
