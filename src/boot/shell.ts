// /bin/sh: the boot probe runs on it, and so do most units' scripts. A
// dangling /usr/bin/sh (dash removed) or a /bin that is no link to usr/bin
// leaves a systemd boot without a word on the console; named here, from the
// tree alone.
import type { Finding } from '../types.js';
import { resolvePath, type Lookup } from './resolve.js';
import { describeFailure } from './unresolved.js';

export const SHELL = '/bin/sh';

/** Why /bin/sh is not there to run, or undefined when it resolves to a file. */
export function shellProblem(lookup: Lookup): Finding | undefined {
  const r = resolvePath(lookup, SHELL);
  if (r.ok && r.entry.type === 'file') return undefined;
  const why = r.ok ? `is a ${r.entry.type}` : r.reason === 'missing' ? `is missing (${r.at} does not exist)` : `is ${describeFailure(r)}`;
  return {
    code: 'no-shell',
    path: SHELL,
    message: `/bin/sh ${why}: the boot probe, and most units, need it; install a shell in the root tree (Debian: dash, or bash's /usr/bin/sh link)`,
    expected: 'a runnable /bin/sh',
    actual: r.ok ? r.entry.type : r.links.length ? r.links : r.reason,
  };
}

/** For the nspawn stage: a boot whose probe cannot run is not started; the same finding as the diagnosis. */
export const probeShellProblem = shellProblem;
