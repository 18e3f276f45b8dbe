// Cause ranking: of all the findings of a failed run, the one a person reads
// first. The boot codes come first, in the order in which one explains the
// others (a broken /lib explains a missing loader, which explains a failed
// boot). Here, below the stages, so that the pipeline and the boot command
// see it without reaching into a stage's module.
import type { Finding } from '../types.js';

/** Codes in the order in which one explains the others (a broken /lib explains a missing loader...). */
export const CAUSE_ORDER = [
  'broken-usr-merge',
  'no-os-release',
  'no-init',
  'command-not-found',
  'init-not-executable',
  'command-not-executable',
  'init-wrong-arch',
  'command-wrong-arch',
  'missing-interpreter',
  'missing-library',
  'default-target-missing',
  'default-target-masked',
  'no-shell',
  'shell-not-executable',
  'shell-wrong-arch',
  'unit-exec-missing',
  'portable-os-release-no-id',
  'portable-prefixes-mismatch',
  'portable-exec-missing',
  'exec-not-executable',
  'exec-wrong-arch',
  'root-full',
  'no-boot-command',
  'boot-failed',
  'rescue-mode',
  'unit-failed',
  'emergency-mode',
  'boot-timeout',
  'default-target-not-reached',
  'command-timeout',
  'command-failed',
];

/** The one line to print first for `part-image boot`: the message of the finding that explains the rest. */
export function primaryCause(findings: readonly Finding[]): string | undefined {
  if (!findings.length) return undefined;
  const rank = (f: Finding) => {
    const i = CAUSE_ORDER.indexOf(f.code);
    return i < 0 ? CAUSE_ORDER.length : i;
  };
  let best = findings[0];
  for (const f of findings) if (rank(f) < rank(best)) best = f;
  return best.message;
}
