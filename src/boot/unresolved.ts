// How a path that did not resolve in the image reads in a finding.
import type { Resolved } from './resolve.js';

/** "a dangling symlink (/lib -> usr/lib; /usr/lib does not exist)", "missing", ... */
export function describeFailure(r: Extract<Resolved, { ok: false }>): string {
  if (r.reason === 'dangling') return `a dangling symlink (${r.links.join(', ')}; ${r.at} does not exist)`;
  if (r.reason === 'escape') return `a symlink that climbs out of the image (${r.links.join(', ')})`;
  if (r.reason === 'loop') return `a symlink loop (${r.links.slice(0, 4).join(', ')}, ...)`;
  if (r.reason === 'not-dir') return `unreachable: ${r.message}`;
  return 'missing';
}
