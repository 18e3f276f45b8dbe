// The man page and the bash completion are generated from the command table
// (man/generate.mjs): they are up to date, groff reads the page without a
// warning, and the completion offers what the parser accepts.
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const PAGE = fileURLToPath(new URL('../man/part-image.1', import.meta.url));
const COMPLETION = fileURLToPath(new URL('../completion/part-image.bash', import.meta.url));

async function complete(...words: string[]): Promise<string> {
  const r = await execa('bash', ['-c', 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _part_image; echo "${COMPREPLY[*]}"', 'bash', COMPLETION, ...words]);
  return r.stdout;
}

describe('man page and completion', () => {
  it('are what man/generate.mjs writes from the current command table', async () => {
    const r = await execa('node', ['man/generate.mjs', '--check'], { cwd: REPO, reject: false });
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
  });

  it('groff -man -ww reads the page without a warning, and man -l shows every command', async () => {
    const groff = await execa('groff', ['-man', '-Tutf8', '-ww', '-z', PAGE]);
    expect(groff.stderr).toBe('');
    const man = await execa('man', ['-l', PAGE], { env: { MANWIDTH: '100', LC_ALL: 'C.UTF-8' } });
    expect(man.stderr).toBe('');
    for (const c of ['build', 'verify', 'manifest', 'diff', 'boot', 'make', 'doctor', 'demo']) expect(man.stdout).toMatch(new RegExp(`^ {3}${c}$`, 'm'));
    expect(man.stdout).toMatch(/EXIT STATUS[^]*130\s+interrupted/);
    // Options are ASCII hyphens, so that they paste into a shell.
    expect(man.stdout).toContain('--report-json FILE');
  });

  it('completes commands, options, format values and comma-separated stage names', async () => {
    expect(await complete('part-image', 'd')).toBe('diff doctor demo');
    expect(await complete('part-image', 'build', '--go')).toBe('--golden --golden-allow');
    expect(await complete('part-image', 'manifest', 'x.img', '--format', '')).toBe('json mtree');
    expect(await complete('part-image', 'build', '--format', 'q')).toBe('qcow2 qed qcow');
    expect(await complete('part-image', 'verify', '--skip', 'diagnose,ns')).toBe('diagnose,nspawn');
    expect(await complete('part-image', 'verify', '--skip', 'portable')).toBe('portable-lint portable');
  });
});
