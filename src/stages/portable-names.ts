// portabled's naming rules, as portable-lint and the portable stage apply
// them: the unit prefix of an image's file name, valid image and unit names,
// and the unit files of a manifest that an attach would pick. Pure.
import { basename } from 'node:path';
import type { Manifest } from '../types.js';
import { InternalError } from '../errors.js';
import { manifestLookup, resolvePath } from '../boot/resolve.js';

export const PORTABLE_UNIT_DIRS = ['/usr/lib/systemd/system', '/lib/systemd/system', '/etc/systemd/system'];
/** Unit types portabled attaches. */
export const PORTABLE_UNIT_TYPES = ['service', 'socket', 'target', 'timer', 'path'];
export const UNIT_SUFFIXES = ['service', 'socket', 'target', 'timer', 'path', 'mount', 'automount', 'swap', 'slice', 'scope', 'device'];
export const API_DIRS = ['/proc', '/sys', '/dev', '/run', '/tmp', '/var/tmp'];

/**
 * "demo_1.0.raw" -> "demo", "/out/demo.raw" -> "demo", "demo" -> "demo".
 * Up to the first "_", else without ".raw" (portabled's rule). Other image
 * extensions (.img, .qcow2, .vmdk) are dropped too, so that a wrongly named
 * image still gets its units matched and the lint can say the name is wrong.
 */
export function portablePrefix(name: string): string {
  const base = basename(name);
  const us = base.indexOf('_');
  if (us >= 0) return base.slice(0, us);
  return base.replace(/\.(raw|img|qcow2|vmdk)$/, '');
}

export interface UnitFile {
  /** Unit name, e.g. "demo.service". */
  name: string;
  /** Where it is in the image, e.g. "/usr/lib/systemd/system/demo.service". */
  path: string;
}

/**
 * Why systemd would refuse `name` as an image name (image_name_is_valid():
 * a valid file name, no control characters, valid UTF-8, not ".#..."), or
 * undefined when it takes it. The name reaches portablectl and the job's
 * /var/tmp path; it is checked here once.
 */
export function portableNameProblem(name: string): string | undefined {
  if (name === '' || name === '.' || name === '..') return 'it is empty, "." or ".."';
  if (name.includes('/')) return 'it contains "/"';
  if (Buffer.byteLength(name) > 255) return `it is ${Buffer.byteLength(name)} bytes, more than a file name's 255`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'it contains a control character (a newline, a tab, ...)';
  if (name.includes('\uFFFD')) return 'it is not valid UTF-8';
  if (name.startsWith('.#')) return 'it starts with ".#" (systemd takes that for a temporary file)';
  return undefined;
}

/** Throws (a bug) for a name portableNameProblem() refuses: callers check first. */
export function checkPortableName(name: string): void {
  const why = portableNameProblem(name);
  if (why) throw new InternalError(`portable image name ${JSON.stringify(name)} is not valid: ${why}`);
}

/**
 * systemd's unit_name_is_valid(): at most 255 bytes, only [A-Za-z0-9:_.\\-]
 * plus at most one "@" before the type suffix, a non-empty prefix and a known
 * unit type. Unit names come from the image: nothing else reaches the job.
 */
export function isValidUnitName(name: string): boolean {
  if (Buffer.byteLength(name) > 255) return false;
  const m = /^([A-Za-z0-9:_.\\-]+)(@[A-Za-z0-9:_.\\-]*)?\.([a-z]+)$/.exec(name);
  return m !== null && UNIT_SUFFIXES.includes(m[3]);
}

/** Every unit file in the unit directories portabled reads (first directory wins for a name). */
export function unitFiles(manifest: Manifest): UnitFile[] {
  return scanUnitFiles(manifest).units;
}

/** The unit files, and the files there whose names systemd would not take as unit names. */
export function scanUnitFiles(manifest: Manifest): { units: UnitFile[]; invalid: UnitFile[] } {
  const invalid: UnitFile[] = [];
  const lookup = manifestLookup(manifest);
  const byName = new Map<string, UnitFile>();
  // Directories may be symlinks (/lib -> usr/lib): resolve them, then list entries under the real path.
  const dirs: { shown: string; real: string }[] = [];
  for (const d of PORTABLE_UNIT_DIRS) {
    const r = resolvePath(lookup, d);
    if (r.ok && r.entry.type === 'dir' && !dirs.some((x) => x.real === r.path)) dirs.push({ shown: d, real: r.path });
  }
  const suffix = new RegExp(`\\.(${UNIT_SUFFIXES.join('|')})$`);
  for (const { shown, real } of dirs) {
    const prefix = `${real}/`;
    for (const e of manifest.entries) {
      if (!e.path.startsWith(prefix)) continue;
      const name = e.path.slice(prefix.length);
      if (name.includes('/') || !suffix.test(name)) continue;
      if (e.type !== 'file' && e.type !== 'symlink') continue;
      if (!isValidUnitName(name)) invalid.push({ name, path: `${shown}/${name}` });
      else if (!byName.has(name)) byName.set(name, { name, path: `${shown}/${name}` });
    }
  }
  return { units: [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)), invalid };
}

/** True when `unitName` belongs to the portable image with `prefix`. */
export function unitMatchesPrefix(unitName: string, prefix: string): boolean {
  if (!unitName.startsWith(prefix)) return false;
  const type = unitName.slice(unitName.lastIndexOf('.') + 1);
  if (!PORTABLE_UNIT_TYPES.includes(type)) return false;
  const next = unitName[prefix.length];
  return next === '.' || next === '-' || next === '@';
}

/** The unit files that portablectl would attach for `prefix`. */
export function matchingUnits(manifest: Manifest, prefix: string): UnitFile[] {
  return unitFiles(manifest).filter((u) => unitMatchesPrefix(u.name, prefix));
}
