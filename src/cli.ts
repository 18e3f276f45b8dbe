// The command line: parses arguments, calls the library, maps errors to exit
// codes. main() returns the code; bin.ts installs the signal handlers, calls
// it and is the only place that exits, so that tests can call main() in-process.
import { EXIT, InternalError, asPartImageError } from './errors.js';
import { log } from './log.js';
import { VERSION } from './version.js';
import { emitReport, parse, type Command } from './commands/common.js';
import type { Report } from './types.js';
import { COMMANDS } from './commands/index.js';

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `part-image ${VERSION}: build Linux partition images and prove them good before accepting them

Usage: part-image COMMAND [OPTIONS]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n')}

Global options: --help, --version, --quiet, --verbose (prints every host command)
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
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(mainHelp());
    return name ? EXIT.ok : EXIT.usage;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`${VERSION}\n`);
    return EXIT.ok;
  }
  const cmd: Command | undefined = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    process.stderr.write(`part-image: unknown command "${name}"\nhint: commands are ${COMMANDS.map((c) => c.name).join(', ')}\n`);
    return EXIT.usage;
  }
  const { values, positionals } = parse(cmd, rest);
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
