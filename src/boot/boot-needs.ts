// What a systemd boot needs from the tree before anything starts, checked
// rootless from the manifest (and a few files' bytes): the usr-merge paths,
// default.target, the ExecStart= binaries of the units it pulls in. And what
// nspawn tolerates but a kernel boot would not (warnings, not findings): no
// /sbin/init, fstab devices that are not in the image.
import type { Finding, Manifest } from '../types.js';
import { resolvePath, type Lookup } from './resolve.js';
import type { FileReader } from './read-files.js';
import { execStarts, findExecutable, findUnit, readUnitFiles, setting, unitsPulledIn } from './units.js';
import { isExecutable } from './program.js';

export const MERGED_DIRS = ['/bin', '/sbin', '/lib', '/lib64', '/lib32', '/libx32'];

/** Entries directly in `dir` (a real path). */
function children(manifest: Manifest, dir: string): number {
  const prefix = `${dir}/`;
  let n = 0;
  for (const e of manifest.entries) if (e.path.startsWith(prefix) && !e.path.slice(prefix.length).includes('/')) n++;
  return n;
}

/**
 * Each usr-merge path is either a link to an existing directory, or (a
 * non-merged image) a real directory with something in it. A real directory
 * that is empty while its /usr twin holds the programs is a broken merge:
 * /bin/sh and every other /bin path are gone.
 */
export function checkUsrMerge(manifest: Manifest, lookup: Lookup): Finding[] {
  const findings: Finding[] = [];
  for (const dir of MERGED_DIRS) {
    const e = lookup(dir);
    if (!e) continue;
    if (e.type === 'dir') {
      const twin = resolvePath(lookup, `/usr${dir}`);
      if (children(manifest, dir) === 0 && twin.ok && twin.entry.type === 'dir' && children(manifest, twin.path) > 0) {
        findings.push({
          code: 'broken-usr-merge',
          path: dir,
          message: `broken usr-merge: ${dir} is an empty directory, not a link to usr${dir}; every program under ${dir} (and /usr${dir}'s ${children(manifest, twin.path)} entries) is unreachable through ${dir}; replace it with the symlink ${dir} -> usr${dir}`,
          expected: `a symlink to usr${dir}`,
          actual: 'an empty directory',
        });
      }
      continue;
    }
    if (e.type !== 'symlink') continue;
    const r = resolvePath(lookup, dir);
    if (r.ok && r.entry.type === 'dir') continue;
    const why = r.ok ? `it points to a ${r.entry.type}, not a directory` : `${r.at} does not exist`;
    findings.push({
      code: 'broken-usr-merge',
      path: dir,
      message: `broken usr-merge: ${dir} -> ${e.target} dangles (${why}); every program under ${dir} is unreachable; fix the link or add the directory it points to in the root tree`,
      expected: 'a symlink to an existing directory',
      actual: e.target,
    });
  }
  return findings;
}

/** default.target resolves to a unit file (through aliases, in every unit folder). */
export function checkDefaultTarget(lookup: Lookup): Finding[] {
  const u = findUnit(lookup, 'default.target');
  if (u.found) return [];
  const where = u.links.length ? ` (${u.links.join(', ')}; no ${u.name} in any unit folder)` : ' (in none of /etc/systemd/system, /usr/lib/systemd/system, /lib/systemd/system)';
  return [
    {
      code: u.masked ? 'default-target-masked' : 'default-target-missing',
      path: u.path ?? '/etc/systemd/system/default.target',
      message: u.masked
        ? `default.target is masked (${u.path} -> /dev/null): systemd falls back to rescue.target; point it to a target (systemctl set-default multi-user.target in the root tree)`
        : `default.target does not resolve${where}: systemd says "Unit default.target not found." and falls back to rescue.target; point it to a target that exists (systemctl set-default multi-user.target in the root tree)`,
      expected: 'a unit file',
      actual: u.links,
    },
  ];
}

/**
 * The service units the default target pulls in have their ExecStart=
 * programs. A unit with a Condition (it may be skipped), an ExecStart= whose
 * failure is ignored ("-"), with specifiers or variables, or in `allowed`, is
 * left out: none of those fails the boot.
 */
export async function checkUnitExecs(manifest: Manifest, lookup: Lookup, read: FileReader, allowed: (unit: string) => boolean): Promise<{ findings: Finding[]; units: number }> {
  const target = findUnit(lookup, 'default.target');
  if (!target.found) return { findings: [], units: 0 };
  const files = await readUnitFiles(manifest, lookup, read);
  const units = unitsPulledIn(manifest, lookup, files, 'default.target');
  const findings: Finding[] = [];
  for (const u of units) {
    if (!u.name.endsWith('.service') || allowed(u.name)) continue;
    const conditional = [...(u.settings.get('Unit')?.keys() ?? [])].some((k) => k.startsWith('Condition') || k.startsWith('Assert'));
    if (conditional) continue;
    for (const c of execStarts(u)) {
      if (c.ignoreFailure || /[%$]/.test(c.program)) continue;
      const found = findExecutable(lookup, c.program);
      const r = found ? resolvePath(lookup, found) : undefined;
      if (found && r?.ok && isExecutable(r.entry.mode)) continue;
      const pulled = setting(u.settings, 'Unit', 'Description')[0];
      findings.push({
        code: 'unit-exec-missing',
        path: u.path,
        message: `${u.name}${pulled ? ` (${pulled})` : ''} is pulled in by the default target, but its ExecStart= program ${c.program} ${found ? 'has no execute bit' : 'is not in the image'}: the unit fails at every boot; install it, drop the unit from the boot, or allow it with --allow-failed-unit ${u.name}`,
        expected: c.program,
      });
    }
  }
  return { findings, units: units.length };
}

// ---- warnings: what nspawn tolerates, a kernel boot does not ----------------

/** No /sbin/init: nspawn finds systemd elsewhere, the kernel tries /sbin/init, /etc/init, /bin/init, /bin/sh. */
export function sbinInitWarning(lookup: Lookup): Finding[] {
  const r = resolvePath(lookup, '/sbin/init');
  if (r.ok && r.entry.type === 'file') return [];
  return [
    {
      code: 'no-sbin-init',
      path: '/sbin/init',
      message: `/sbin/init ${r.ok ? `is a ${r.entry.type}` : 'does not resolve'}: systemd-nspawn finds systemd anyway, but a kernel or VM boot tries /sbin/init, /etc/init, /bin/init and /bin/sh, and then panics (or runs a shell as PID 1); install systemd-sysv, or boot with init=/usr/lib/systemd/systemd`,
    },
  ];
}

export interface FstabEntry {
  spec: string;
  file: string;
  type: string;
  options: string[];
  line: number;
}

export function parseFstab(text: string): FstabEntry[] {
  const out: FstabEntry[] = [];
  text.split('\n').forEach((raw, i) => {
    const l = raw.trim();
    if (!l || l.startsWith('#')) return;
    const [spec, file, type, opts] = l.split(/\s+/);
    if (!spec || !file) return;
    out.push({ spec, file, type: type ?? 'auto', options: (opts ?? 'defaults').split(','), line: i + 1 });
  });
  return out;
}

/**
 * fstab devices a kernel boot would wait for and not find: any device other
 * than the image itself (its UUID or label), unless nofail or noauto. In a
 * container systemd ignores them; a VM or bare-metal boot ends in emergency
 * mode after the device timeout.
 */
export function fstabWarnings(text: string, self: { uuid?: string; label?: string }): Finding[] {
  const findings: Finding[] = [];
  for (const e of parseFstab(text)) {
    const isDevice = /^(UUID|LABEL|PARTUUID|PARTLABEL)=/.test(e.spec) || e.spec.startsWith('/dev/');
    if (!isDevice || e.options.includes('nofail') || e.options.includes('noauto')) continue;
    const [kind, value] = e.spec.includes('=') ? [e.spec.slice(0, e.spec.indexOf('=')), e.spec.slice(e.spec.indexOf('=') + 1).replace(/^"|"$/g, '')] : ['', e.spec];
    if (kind === 'UUID' && self.uuid && value.toLowerCase() === self.uuid.toLowerCase()) continue;
    if (kind === 'LABEL' && self.label && value === self.label) continue;
    findings.push({
      code: 'fstab-device-missing',
      path: '/etc/fstab',
      field: e.file,
      message: `/etc/fstab line ${e.line} mounts ${e.spec} on ${e.file}, a device that is not this image: containers ignore it, but a kernel or VM boot waits for it (90 s) and then falls into emergency mode; add nofail, or make sure the device is attached`,
      actual: e.spec,
    });
  }
  return findings;
}

/** Whether /etc/fstab mounts / read-only (the "ro" option on the / line). */
export function fstabRootReadOnly(text: string): boolean {
  return parseFstab(text).some((e) => e.file === '/' && e.options.includes('ro'));
}
