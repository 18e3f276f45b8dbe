// The portable-lint stage: rootless checks that an image can be attached with
// portablectl, from its manifest alone.
//
// - The unit prefix is the image's file name up to the first "_" or ".raw"
//   ("demo_1.0.raw" -> "demo"). portabled attaches the unit files whose name is
//   PREFIX.TYPE, PREFIX-*.TYPE or PREFIX@*.TYPE, found in /usr/lib/systemd/system,
//   /lib/systemd/system or /etc/systemd/system.
// - No such unit: the image is not a portable service image and the stage is
//   skipped as not applicable, unless the user said it is one (--portable):
//   then that is the finding 'portable-no-unit', naming the prefix and the unit
//   files that are there.
// - Otherwise: os-release, /etc/resolv.conf and /etc/machine-id (portabled
//   binds over them; they may be empty), the API mount points /proc /sys /dev
//   /run /tmp /var/tmp, and an output name that ends in .raw.
// - What portabled checks when it attaches (lintPortableContent, from the
//   files' bytes): os-release has ID= ('portable-os-release-no-id');
//   PORTABLE_PREFIXES=, when os-release has it, covers every matching unit
//   ('portable-prefixes-mismatch'); each matching service's ExecStart=
//   program is in the image ('portable-exec-missing') and runs here: its
//   interpreter, ELF machine and libraries (exec-not-executable,
//   exec-wrong-arch, missing-interpreter, missing-library). The VM attach
//   (the portable stage) remains the proof; this names the cause in a second.
//
// Whether these stages apply is decided by the image's role (boot/role.ts),
// never by the name alone: a root image named dbus_1.0.img is a root image.
// portableApplies() is that one rule.
import { notForRole } from '../boot/role.js';
import { roleOf } from './role.js';
import { basename } from 'node:path';
import type { Finding, Manifest } from '../types.js';
import { manifestLookup, resolvePath } from '../boot/resolve.js';
import { passedOrFailed, skipped, type Stage, imageManifestOf } from './context.js';
import { OPTION } from './options.js';
import type { FileReader } from '../boot/read-files.js';
import { readImageFiles } from '../boot/read-files.js';
import { execStarts, findExecutable, loadUnit, readUnitFiles } from '../boot/units.js';
import { checkProgram } from '../boot/program.js';
import { hostElfClass, hostElfMachine } from '../boot/elf.js';
import { API_DIRS, UNIT_SUFFIXES, PORTABLE_UNIT_DIRS, PORTABLE_UNIT_TYPES, checkPortableName, isValidUnitName, matchingUnits, portableNameProblem, portablePrefix, scanUnitFiles, unitFiles, unitMatchesPrefix, type UnitFile } from './portable-names.js';
export { PORTABLE_UNIT_DIRS, PORTABLE_UNIT_TYPES, checkPortableName, isValidUnitName, matchingUnits, portableNameProblem, portablePrefix, scanUnitFiles, unitFiles, unitMatchesPrefix, type UnitFile };

/** The lint itself, on a manifest. */
export function lintPortable(manifest: Manifest, imageName: string, portable: boolean): { applicable: boolean; findings: Finding[]; details: Record<string, unknown> } {
  const prefix = portablePrefix(imageName);
  const { units: all, invalid } = scanUnitFiles(manifest);
  const units = all.filter((u) => unitMatchesPrefix(u.name, prefix));
  const details: Record<string, unknown> = { prefix, units: units.map((u) => u.path) };
  const findings: Finding[] = [];
  const nameProblem = portableNameProblem(basename(imageName));
  if (nameProblem && (units.length || portable)) {
    findings.push({
      code: 'portable-bad-name',
      path: basename(imageName),
      message: `the image name ${JSON.stringify(basename(imageName))} is not one systemd takes: ${nameProblem}; name it ${prefix.replace(/[^A-Za-z0-9:_.-]/g, '') || 'NAME'}_VERSION.raw`,
      actual: basename(imageName),
    });
  }
  for (const u of invalid.filter((x) => x.name.startsWith(prefix) || portable)) {
    findings.push({
      code: 'portable-bad-unit-name',
      path: u.path,
      message: `${JSON.stringify(u.path)} is not a valid unit name (systemd takes only letters, digits and ":_.\\-", one "@", and a unit type suffix): portabled would not attach it; rename the unit file`,
    });
  }
  if (!units.length) {
    if (!portable) return { applicable: false, findings, details };
    const found = all.filter((u) => PORTABLE_UNIT_TYPES.some((t) => u.name.endsWith(`.${t}`)));
    findings.push({
      code: 'portable-no-unit',
      path: `${PORTABLE_UNIT_DIRS[0]}/${prefix}.service`,
      message: `no unit file matches the image's prefix '${prefix}' (from ${basename(imageName)}): portablectl attaches only ${prefix}.service, ${prefix}-*.service, ${prefix}@.service (or other unit types); unit files found: ${found.length ? found.map((u) => u.name).join(', ') : 'none'}; rename the unit or the image`,
      expected: `${prefix}.service`,
      actual: found.map((u) => u.name),
    });
  }
  const lookup = manifestLookup(manifest);
  const has = (p: string, types: string[]) => {
    const r = resolvePath(lookup, p);
    return r.ok && types.includes(r.entry.type);
  };
  if (!has('/etc/os-release', ['file']) && !has('/usr/lib/os-release', ['file'])) {
    findings.push({
      code: 'portable-no-os-release',
      path: '/usr/lib/os-release',
      message: 'no os-release: a portable image needs /usr/lib/os-release or /etc/os-release (portablectl reads it); add one to the root tree',
    });
  }
  for (const p of ['/etc/resolv.conf', '/etc/machine-id']) {
    // portabled bind-mounts the host's over them; they must exist (empty is fine).
    if (!lookup(p)) {
      findings.push({
        code: 'portable-missing-file',
        path: p,
        message: `${p} is missing: portabled bind-mounts the host's ${p} over it, so the image must have one (an empty file is enough)`,
      });
    }
  }
  for (const d of API_DIRS) {
    if (!has(d, ['dir'])) {
      findings.push({
        code: 'portable-missing-dir',
        path: d,
        message: `${d} is missing: a portable service gets ${d} mounted there, so the image must have the empty directory`,
      });
    }
  }
  if (!basename(imageName).endsWith('.raw')) {
    findings.push({
      code: 'portable-bad-name',
      path: basename(imageName),
      message: `the image name ${basename(imageName)} does not end in .raw: portablectl only attaches .raw files (or directories); name it ${prefix}.raw or ${prefix}_VERSION.raw`,
      expected: '*.raw',
      actual: basename(imageName),
    });
  }
  return { applicable: true, findings, details };
}

/** KEY=VALUE lines of an os-release file, quotes removed. */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(raw);
    if (!m) continue;
    out[m[1]] = m[2].trim().replace(/^(["'])(.*)\1$/, '$2');
  }
  return out;
}

/** The checks that need the files' bytes: os-release's fields, the units' ExecStart= programs. */
export async function lintPortableContent(manifest: Manifest, read: FileReader, units: readonly UnitFile[]): Promise<Finding[]> {
  const findings: Finding[] = [];
  const lookup = manifestLookup(manifest);
  const osr = ['/etc/os-release', '/usr/lib/os-release'].map((p) => resolvePath(lookup, p)).find((r) => r.ok && r.entry.type === 'file');
  if (osr?.ok) {
    const fields = parseOsRelease((await read([osr.path])).get(osr.path)?.toString('utf8') ?? '');
    if (!fields.ID) {
      findings.push({
        code: 'portable-os-release-no-id',
        path: osr.path,
        message: `${osr.path} has no ID= line: portablectl attach refuses an image whose os-release does not name its OS; add ID=NAME (and VERSION_ID=) to it`,
        expected: 'ID=...',
      });
    }
    const prefixes = (fields.PORTABLE_PREFIXES ?? '').split(/\s+/).filter(Boolean);
    if (prefixes.length) {
      const uncovered = units.filter((u) => !prefixes.some((p) => unitMatchesPrefix(u.name, p)));
      if (uncovered.length) {
        findings.push({
          code: 'portable-prefixes-mismatch',
          path: osr.path,
          message: `PORTABLE_PREFIXES=${prefixes.join(' ')} in ${osr.path} does not cover ${uncovered.map((u) => u.name).join(', ')}: portabled attaches only the units those prefixes match; add the unit's prefix to PORTABLE_PREFIXES or rename the unit`,
          expected: prefixes,
          actual: uncovered.map((u) => u.name),
        });
      }
    }
  }
  const files = await readUnitFiles(manifest, lookup, read);
  const host = { machine: hostElfMachine(), elfClass: hostElfClass() };
  for (const u of units.filter((x) => x.name.endsWith('.service'))) {
    const unit = loadUnit(manifest, lookup, files, u.name);
    if (!unit) continue;
    for (const c of execStarts(unit)) {
      if (/[%$]/.test(c.program)) continue;
      const found = findExecutable(lookup, c.program);
      if (!found) {
        const r = resolvePath(lookup, c.program.startsWith('/') ? c.program : `/usr/bin/${c.program}`);
        findings.push({
          code: 'portable-exec-missing',
          path: u.path,
          message: `${u.name}'s ExecStart= program ${c.program} is not in the image${!r.ok && r.reason !== 'missing' ? ` (${r.message})` : ''}: the service fails as soon as it is started; add it to the image or fix ExecStart=`,
          expected: c.program,
        });
        continue;
      }
      const p = await checkProgram(manifest, lookup, read, found, { name: 'exec', fix: `fix ${u.name}'s ExecStart= or the file` }, host);
      findings.push(...p.findings.map((f) => ({ ...f, message: `${u.name}: ${f.message}` })));
    }
  }
  return findings;
}

/**
 * Whether the portable stages apply: the image's role is portable (detected:
 * no init and a unit matching its name; or --role portable), or --portable
 * requires them. A root image whose name prefix happens to match a unit is a
 * root image. Pure.
 */
export function portableApplies(role: { role: string }, portableFlag: boolean): boolean {
  return portableFlag || role.role === 'portable';
}

export const portableLintStage: Stage = {
  name: 'portable-lint',
  tools: ['debugfs'],
  runs: 'rootless',
  options: { type: 'object', properties: { portable: OPTION.portable }, required: ['portable'], additionalProperties: false },
  summary: 'rootless portable-service lint: unit files matching the name prefix, os-release (ID=, PORTABLE_PREFIXES=), resolv.conf, machine-id, API dirs, .raw name, the units\' ExecStart= programs',
  async run(ctx) {
    const role = await roleOf(ctx);
    if (role.role === 'data') return skipped(notForRole(role, 'portable-lint'), 'not-applicable');
    const manifest = await imageManifestOf(ctx, { hash: false });
    const r = lintPortable(manifest, ctx.imageName, ctx.opts.portable || role.role === 'portable');
    if (r.applicable && !portableApplies(role, ctx.opts.portable)) {
      return {
        ...skipped(
          `not a portable service image: ${role.why}, though a unit matches the prefix '${String(r.details.prefix)}' of ${basename(ctx.imageName)} (pass --portable or --role portable to require the portable checks)`,
          'not-applicable',
        ),
        details: { ...r.details, role: role.role },
      };
    }
    if (!r.applicable) {
      return {
        ...skipped(
          `not a portable service image: no unit file matches the prefix '${String(r.details.prefix)}' of ${basename(ctx.imageName)} (pass --portable to require one)`,
          'not-applicable',
        ),
        details: r.details,
      };
    }
    const units = matchingUnits(manifest, String(r.details.prefix));
    const content = await lintPortableContent(manifest, (paths) => readImageFiles(ctx.image, paths), units);
    return passedOrFailed([...r.findings, ...content], r.details);
  },
};
