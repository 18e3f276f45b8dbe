// systemd units inside an image, read the way systemd 252 loads them, from a
// manifest and the unit files' bytes: the search path, aliases (a symlink in
// a unit directory is an alias, even when it dangles: its target's name is
// then looked up by name), masks (-> /dev/null), templates, drop-ins, the
// dependencies in [Unit] and in .wants/.requires folders, and ExecStart=.
import { posix } from 'node:path';
import type { Manifest } from '../types.js';
import { resolvePath, type Lookup } from './resolve.js';
import type { FileReader } from './read-files.js';

/** systemd's system unit search path, in its order (without /run, which an image does not ship). */
export const UNIT_DIRS = ['/etc/systemd/system', '/usr/local/lib/systemd/system', '/usr/lib/systemd/system', '/lib/systemd/system'];

export type UnitLookup =
  | { found: true; name: string; /** where the name was found */ path: string; /** the file it loads */ file: string; links: string[] }
  | { found: false; masked: boolean; name: string; links: string[]; path?: string };

/** The unit directories as they resolve in the image (/lib -> usr/lib makes two of them one). */
export function unitDirs(lookup: Lookup): { shown: string; real: string }[] {
  const dirs: { shown: string; real: string }[] = [];
  for (const d of UNIT_DIRS) {
    const r = resolvePath(lookup, d);
    if (r.ok && r.entry.type === 'dir' && !dirs.some((x) => x.real === r.path)) dirs.push({ shown: d, real: r.path });
  }
  return dirs;
}

/** Where systemd finds the unit `name`, following aliases; or why it does not. */
export function findUnit(lookup: Lookup, name: string): UnitLookup {
  const links: string[] = [];
  const dirs = unitDirs(lookup);
  let current = name;
  for (let hop = 0; hop < 16; hop++) {
    const candidates = [current];
    const tpl = /^([^@]+)@[^.]+(\.\w+)$/.exec(current);
    if (tpl) candidates.push(`${tpl[1]}@${tpl[2]}`);
    let next: string | undefined;
    for (const c of candidates) {
      for (const { shown, real } of dirs) {
        const p = `${real}/${c}`;
        const e = lookup(p);
        if (!e) continue;
        const at = `${shown}/${c}`;
        if (e.type === 'symlink') {
          if (e.target === '/dev/null') return { found: false, masked: true, name: current, links, path: at };
          const r = resolvePath(lookup, p);
          links.push(`${at} -> ${e.target}`);
          if (r.ok && r.entry.type === 'file') return { found: true, name, path: at, file: r.path, links };
          if (r.ok && r.entry.type === 'char') return { found: false, masked: true, name: current, links, path: at };
          const alias = posix.basename(e.target ?? '');
          if (alias && alias !== current) next = alias;
          else return { found: false, masked: false, name: current, links, path: at };
        } else if (e.type === 'file') {
          if (e.size === 0) return { found: false, masked: true, name: current, links, path: at };
          return { found: true, name, path: at, file: p, links };
        }
        break;
      }
      if (next) break;
    }
    if (!next) return { found: false, masked: false, name: current, links };
    current = next;
  }
  return { found: false, masked: false, name: current, links };
}

/** One unit file's settings: section -> key -> values in order (an empty value resets a list, as systemd does). */
export type UnitSettings = Map<string, Map<string, string[]>>;

export function parseUnitFile(text: string, into: UnitSettings = new Map()): UnitSettings {
  let section = '';
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i].trim();
    while (line.endsWith('\\') && i + 1 < lines.length) line = `${line.slice(0, -1)} ${lines[++i].trim()}`;
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) {
      section = sec[1];
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    let s = into.get(section);
    if (!s) into.set(section, (s = new Map()));
    if (value === '') s.set(key, []);
    else s.set(key, [...(s.get(key) ?? []), value]);
  }
  return into;
}

export function setting(u: UnitSettings, section: string, key: string): string[] {
  return u.get(section)?.get(key) ?? [];
}

const DEP_KEYS = ['Wants', 'Requires', 'Requisite', 'BindsTo', 'Upholds'];
const EXEC_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** Every regular file in the unit folders and their drop-in folders (to read in one go). */
export function unitFilePaths(manifest: Manifest, lookup: Lookup): string[] {
  const reals = unitDirs(lookup).map((d) => `${d.real}/`);
  const out: string[] = [];
  for (const e of manifest.entries) {
    if (e.type !== 'file') continue;
    const dir = reals.find((r) => e.path.startsWith(r));
    if (!dir) continue;
    const rest = e.path.slice(dir.length);
    const parts = rest.split('/');
    if (parts.length === 1 || (parts.length === 2 && parts[0].endsWith('.d') && parts[1].endsWith('.conf'))) out.push(e.path);
  }
  return out;
}

export interface LoadedUnit {
  name: string;
  /** The path the unit was found at (as the user would look for it). */
  path: string;
  settings: UnitSettings;
}

/** A unit with its drop-ins applied, from files read before (`files`: resolved path -> bytes). */
export function loadUnit(manifest: Manifest, lookup: Lookup, files: ReadonlyMap<string, Buffer>, name: string): LoadedUnit | undefined {
  const u = findUnit(lookup, name);
  if (!u.found) return undefined;
  const text = files.get(u.file)?.toString('utf8');
  if (text === undefined) return undefined;
  const settings = parseUnitFile(text);
  const tpl = /^([^@]+)@[^.]+(\.\w+)$/.exec(name);
  const dropDirs = [name, ...(tpl ? [`${tpl[1]}@${tpl[2]}`] : [])].map((n) => `${n}.d/`);
  const confs: string[] = [];
  for (const { real } of unitDirs(lookup)) {
    for (const e of manifest.entries) {
      if (e.type !== 'file' || !e.path.endsWith('.conf')) continue;
      if (dropDirs.some((d) => e.path.startsWith(`${real}/${d}`) && !e.path.slice(`${real}/${d}`.length).includes('/'))) confs.push(e.path);
    }
  }
  // Drop-ins apply in the order of their file names, whatever folder they are in.
  confs.sort((a, b) => (posix.basename(a) < posix.basename(b) ? -1 : 1));
  for (const c of confs) {
    const t = files.get(c)?.toString('utf8');
    if (t !== undefined) parseUnitFile(t, settings);
  }
  return { name, path: u.path, settings };
}

/** The units `name` pulls in: Wants=/Requires=/... and its .wants/.requires folders. */
export function dependencies(manifest: Manifest, lookup: Lookup, unit: LoadedUnit): string[] {
  const out = new Set<string>();
  for (const k of DEP_KEYS) for (const v of setting(unit.settings, 'Unit', k)) for (const n of v.split(/\s+/)) if (n) out.add(n);
  for (const { real } of unitDirs(lookup)) {
    for (const sfx of ['.wants/', '.requires/']) {
      const prefix = `${real}/${unit.name}${sfx}`;
      for (const e of manifest.entries) if (e.path.startsWith(prefix) && !e.path.slice(prefix.length).includes('/')) out.add(e.path.slice(prefix.length));
    }
  }
  return [...out];
}

/** The units the boot would start from `target` (breadth first, each once). */
export function unitsPulledIn(manifest: Manifest, lookup: Lookup, files: ReadonlyMap<string, Buffer>, target: string): LoadedUnit[] {
  const seen = new Set<string>([target]);
  const queue = [target];
  const out: LoadedUnit[] = [];
  while (queue.length && seen.size < 2000) {
    const name = queue.shift()!;
    const unit = loadUnit(manifest, lookup, files, name);
    if (!unit) continue;
    out.push(unit);
    for (const d of dependencies(manifest, lookup, unit)) {
      if (!seen.has(d)) {
        seen.add(d);
        queue.push(d);
      }
    }
  }
  return out;
}

export interface ExecCommand {
  /** The program as written (after the prefixes). */
  program: string;
  /** Its failure is ignored ("-" prefix). */
  ignoreFailure: boolean;
}

/** The ExecStart= commands of a service, with systemd's prefixes taken off. */
export function execStarts(unit: LoadedUnit): ExecCommand[] {
  return setting(unit.settings, 'Service', 'ExecStart').flatMap((v) => {
    const m = /^([-@:+!|]*)(\S+)/.exec(v);
    if (!m) return [];
    return [{ program: m[2], ignoreFailure: m[1].includes('-') }];
  });
}

/** Where a program named in ExecStart= is in the image (systemd searches a fixed PATH for a bare name), or undefined. */
export function findExecutable(lookup: Lookup, program: string): string | undefined {
  const candidates = program.startsWith('/') ? [program] : EXEC_PATH.map((d) => `${d}/${program}`);
  return candidates.find((p) => {
    const r = resolvePath(lookup, p);
    return r.ok && r.entry.type === 'file';
  });
}

/** Read every unit file and drop-in of the image in one go. */
export async function readUnitFiles(manifest: Manifest, lookup: Lookup, read: FileReader): Promise<Map<string, Buffer>> {
  return read(unitFilePaths(manifest, lookup));
}
