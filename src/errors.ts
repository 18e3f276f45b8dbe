// The few error classes of part-image. Each carries the process exit code it
// maps to and a hint that tells the user what to do next. Only cli.ts exits.

export const EXIT = {
  ok: 0,
  rejected: 1,
  usage: 2,
  environment: 3,
  interrupted: 130,
} as const;

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

/** SIGINT/SIGTERM arrived; cleanup has run. Exit 130. */
export class InterruptedError extends PartImageError {
  constructor(signal: string) {
    super(`interrupted by ${signal}; temporary files, mounts and loop devices were released`, EXIT.interrupted);
  }
}
