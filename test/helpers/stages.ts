// `--skip` for every verification stage but the ones a test is about, so that
// a test of the golden or reproducible stage does not boot containers.
import { ALL_STAGE_NAMES } from '../../src/stages/index.js';

export function skipAllBut(...keep: string[]): string[] {
  const skip = ALL_STAGE_NAMES.filter((s) => !keep.includes(s));
  return skip.length ? ['--skip', skip.join(',')] : [];
}

/** The boot stages, for tests of the core pipeline on trees that are not meant to boot. */
export const BOOT_STAGE_NAMES = ['diagnose', 'nspawn', 'portable-lint', 'portable'];

export function skipBoot(): string[] {
  return ['--skip', BOOT_STAGE_NAMES.filter((s) => ALL_STAGE_NAMES.includes(s)).join(',')];
}
