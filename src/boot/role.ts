// An image's role, read from its manifest: what kind of partition it is, so
// that only the checks that apply to it run.
// - root: a system that boots (os-release and an init): every boot stage.
// - portable: a portable service: no init (portablectl runs its units with
//   the host's systemd), unit files matching the image's name prefix. The
//   init checks and the nspawn boot do not apply; portabled's needs do (the
//   units' ExecStart binaries with their interpreter and libraries).
// - data: no os-release, no init, no unit file: a filesystem that is never
//   booted (Raptor's book: an efibootguard update partition). No boot stage
//   applies.
// A tree with os-release but no init and no matching unit is a root (and is
// rejected for it). --role (or PART_IMAGE_ROLE) overrides the detection.
import { UsageError } from '../errors.js';
import type { Manifest } from '../types.js';
import { manifestLookup, resolvePath } from './resolve.js';

export const IMAGE_ROLES = ['root', 'portable', 'data'] as const;
export type ImageRole = (typeof IMAGE_ROLES)[number];
export const ROLE_ENV = 'PART_IMAGE_ROLE';

export const INIT_PATHS = ['/sbin/init', '/usr/lib/systemd/systemd', '/lib/systemd/systemd'];
export const OS_RELEASE_PATHS = ['/etc/os-release', '/usr/lib/os-release'];
export const UNIT_DIRS = ['/usr/lib/systemd/system', '/lib/systemd/system', '/etc/systemd/system'];

export function parseRole(value: string | undefined, where = '--role'): ImageRole | undefined {
  if (value === undefined || value === '') return undefined;
  if ((IMAGE_ROLES as readonly string[]).includes(value)) return value as ImageRole;
  throw new UsageError(`${where} must be one of ${IMAGE_ROLES.join(', ')}, got "${value}"`,
    'root: a system that boots; portable: a portable service (no init); data: a partition that is never booted.');
}

export interface RoleFacts {
  osRelease: boolean;
  init: boolean;
  /** Unit files anywhere in the unit folders. */
  unitFiles: number;
  /** Unit files matching the image's portable prefix. */
  matchingUnits: number;
  /** --portable was given. */
  portableFlag: boolean;
}

export interface RoleDecision {
  role: ImageRole;
  /** Given by --role / PART_IMAGE_ROLE rather than detected. */
  forced: boolean;
  why: string;
}

/** What the manifest says; `matchingUnits` comes from the portable lint's prefix rule. */
export function roleFacts(manifest: Manifest, matchingUnits: number, portableFlag: boolean): RoleFacts {
  const lookup = manifestLookup(manifest);
  const present = (p: string) => {
    const r = resolvePath(lookup, p);
    return r.ok || r.reason !== 'missing';
  };
  const unitFiles = manifest.entries.filter((e) => e.type !== 'dir' && UNIT_DIRS.some((d) => e.path.startsWith(`${d}/`))).length;
  return { osRelease: OS_RELEASE_PATHS.some(present), init: INIT_PATHS.some(present), unitFiles, matchingUnits, portableFlag };
}

/** The role, forced or detected. Pure. */
export function decideRole(f: RoleFacts, forced?: ImageRole): RoleDecision {
  if (forced) return { role: forced, forced: true, why: `--role ${forced}` };
  if (!f.init && (f.matchingUnits > 0 || f.portableFlag)) {
    return { role: 'portable', forced: false, why: `a portable service: no init, ${f.portableFlag && !f.matchingUnits ? '--portable' : `${f.matchingUnits} unit file(s) matching its name`}` };
  }
  if (!f.osRelease && !f.init && f.unitFiles === 0) {
    return { role: 'data', forced: false, why: 'a data partition: no os-release, no init and no unit file' };
  }
  return { role: 'root', forced: false, why: f.init ? 'a root filesystem: it has an init' : 'a root filesystem: it has os-release or unit files' };
}

/** The reason a boot stage gives when it does not apply to the role. */
export function notForRole(d: RoleDecision, stage: string): string {
  const how = d.forced ? `(--role ${d.role})` : `(detected: ${d.why}; --role root requires the boot stages)`;
  return `does not apply to a ${d.role === 'data' ? 'data partition' : 'portable service'} ${how}: the ${stage} stage checks what booting needs`;
}
