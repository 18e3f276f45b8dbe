// Runs the built CLI as a user would (npm test builds dist/ first).
import { fileURLToPath } from 'node:url';
import { execa, type Options } from 'execa';

export const CLI = fileURLToPath(new URL('../../dist/bin.js', import.meta.url));

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export async function runCli(args: string[], opts: Options = {}): Promise<CliResult> {
  const r = await execa('node', [CLI, ...args], { reject: false, ...opts, env: { ...process.env, ...(opts.env ?? {}) } });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}
