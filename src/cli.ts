// The command line: parses arguments, calls the library, maps errors to exit
// codes. main() returns the code; bin.ts installs the signal handlers, calls
// it and is the only place that exits, so that tests can call main() in-process.
import { EXIT, InternalError, UsageError, asPartImageError } from './errors.js';
import { log } from './log.js';
import { VERSION } from './version.js';
import { emitReport, parse, type Command } from './commands/common.js';
import { didYouMean, leadingGlobals } from './commands/args.js';
import type { Report } from './types.js';
import { COMMANDS } from './commands/index.js';

/** The options that may come before the command's name. */
const GLOBAL_FLAGS = new Set(['-h', '--help', '-q', '--quiet', '-v', '--verbose', '-V', '--version']);

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `part-image ${VERSION}: build Linux partition images and prove them good before accepting them

Usage: part-image COMMAND [OPTIONS]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n')}

Global options, before or after the command:
  -h, --help     the usage (of a command: with examples)
  -q, --quiet    no progress and no summary; errors, and the one-line cause of a rejection, still go to stderr
  -v, --verbose  every host command, as a line you can paste into a shell
  -V, --version  the version
Exit codes: 0 accepted / same, 1 rejected / differ, 2 usage or bad input,
            3 environment (missing tool, privilege or VM), 4 internal error (a bug in
            part-image, never a verdict on the image), 130 interrupted.
Run \`part-image COMMAND --help\` for a command's options and examples.
`;
}

/** Runs one command line; every error is printed and mapped to its exit code here. */
export async function main(argv: string[]): Promise<number> {
  try {
    return await runCommand(argv);
  } catch (err) {
    return report(err);
  }
}

async function runCommand(argv: string[]): Promise<number> {
  // Global options may come before the command: `part-image --verbose doctor`.
  const { globals, rest: afterGlobals } = leadingGlobals(argv);
  const [name, ...rest] = afterGlobals;
  if (globals.some((g) => g === '--version' || g === '-V') || name === '--version') {
    process.stdout.write(`${VERSION}\n`);
    return EXIT.ok;
  }
  for (const g of globals) {
    if (!GLOBAL_FLAGS.has(g)) {
      throw new UsageError(`${g.split('=')[0]} is not a global option; only ${[...GLOBAL_FLAGS].join(', ')} may come before the command${didYouMean(g.split('=')[0], [...GLOBAL_FLAGS].filter((f) => f.startsWith('--')))}`,
        'Put it after the command: part-image COMMAND ' + g.split('=')[0] + ' ...');
    }
  }
  if (!name || name === 'help' || globals.some((g) => g === '--help' || g === '-h')) {
    if (!name || name === 'help' || !COMMANDS.some((c) => c.name === name)) {
      process.stdout.write(mainHelp());
      return name || globals.length ? EXIT.ok : EXIT.usage;
    }
  }
  const cmd: Command | undefined = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    const names = COMMANDS.map((c) => c.name);
    throw new UsageError(`unknown command "${name}"${didYouMean(name, names)}`, `Commands: ${names.join(', ')}. Run \`part-image --help\`.`);
  }
  const { values, positionals } = parse(cmd, [...globals, ...rest]);
  if (values.help) {
    process.stdout.write(`${cmd.summary}\n\nUsage: ${cmd.usage}\n`);
    return EXIT.ok;
  }
  log.setVerbosity(values.verbose ? 'verbose' : values.quiet ? 'quiet' : 'normal');
  try {
    return await cmd.run(values, positionals);
  } catch (err) {
    // A step that threw (a tree too big for SIZE_MB, a missing tool) still gets
    // its report, so that CI sees which stage stopped the run.
    const partial = (err as { report?: Report }).report;
    if (partial) await emitReport(partial, values).catch((e: Error) => log.warn(`could not write the report: ${e.message}`));
    throw err;
  }
}

function report(raw: unknown): number {
  const err = asPartImageError(raw);
  if (err instanceof InternalError) {
    const stack = raw instanceof InternalError || !(raw instanceof Error) ? err.where : raw.stack;
    process.stderr.write(`part-image: ${err.message}\n${stack ? `  ${stack.split('\n').join('\n  ')}\n` : ''}hint: ${err.hint}\n`);
    return err.exitCode;
  }
  process.stderr.write(`part-image: ${err.message}\n`);
  if (err.hint) process.stderr.write(`hint: ${err.hint}\n`);
  return err.exitCode;
}
