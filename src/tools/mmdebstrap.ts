// mmdebstrap: a Debian root as a tar, with a customize hook that copies a
// directory of extra files in. Used to make the part-image VM's root.
import { run, shellQuote } from '../exec.js';

export interface MmdebstrapOptions {
  suite: string;
  variant: string;
  architecture: string;
  /** Packages on top of the variant. */
  include: readonly string[];
  /** Mirrors; empty: mmdebstrap's default for the suite. */
  mirrors: readonly string[];
}

/** The argv after `mmdebstrap` that writes the root to `tar`, with `overlay`'s files copied in as root:root. Pure. */
export function buildMmdebstrapArgs(o: MmdebstrapOptions, overlay: string, tar: string): string[] {
  // Copy the overlay in as root:root, without touching the modes of the
  // directories it shares with Debian (/etc, /usr/local/lib).
  const hook = `tar -C ${shellQuote(overlay)} --owner=0 --group=0 -cf - . | tar -C "$1" --no-overwrite-dir -xpf -`;
  return [
    '--quiet',
    `--variant=${o.variant}`,
    `--architectures=${o.architecture}`,
    `--include=${o.include.join(',')}`,
    `--customize-hook=${hook}`,
    o.suite,
    tar,
    ...o.mirrors,
  ];
}

export async function mmdebstrap(o: MmdebstrapOptions, overlay: string, tar: string, timeoutMs: number): Promise<void> {
  await run('mmdebstrap', buildMmdebstrapArgs(o, overlay, tar), {
    timeoutMs,
    hint: 'mmdebstrap needs root (or user namespaces) and access to a Debian mirror.',
  });
}
