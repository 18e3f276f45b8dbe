// Raptor's module names and logical paths, as Raptor resolves them:
// - a module name (a run's `target`, each `input`) is split on "."; a first
//   part "$NAME" roots it in the package linked as NAME, "$" alone at "/",
//   anything else is relative to the Raptor.toml's folder; "@inst" at the end
//   is an instance of NAME@.rapt (crates/raptor-parser/src/util/module_name.rs,
//   src/program/resolver.rs to_program_path);
// - a logical path (a run's `output` and `cache`) replaces each path
//   component "$NAME" by the link's path and is otherwise taken as written,
//   so relative to the folder `raptor make` runs in (resolve_logical_path).
// Links come from -L NAME PATH and from [raptor.link]; [raptor.link] wins, as
// Raptor adds its links after -L's (src/bin/raptor.rs, maker.add_links).
import { isAbsolute, join, resolve } from 'node:path';
import { UsageError } from '../errors.js';

export interface ModuleName {
  root: { kind: 'relative' } | { kind: 'absolute' } | { kind: 'package'; name: string };
  parts: string[];
  instance?: string;
}

/** ModuleName::from(&str). Pure. */
export function parseModuleName(value: string): ModuleName {
  const names = value === '' ? [] : value.split('.');
  let instance: string | undefined;
  const last = names.length - 1;
  if (last >= 0) {
    const at = names[last].lastIndexOf('@');
    if (at >= 0) {
      instance = names[last].slice(at + 1);
      names[last] = names[last].slice(0, at + 1);
    }
  }
  if (names[0]?.startsWith('$')) {
    const root = names.shift()!.slice(1);
    return { root: root === '' ? { kind: 'absolute' } : { kind: 'package', name: root }, parts: names, instance };
  }
  return { root: { kind: 'relative' }, parts: names, instance };
}

/** Camino's set_extension("rapt") on the last component. */
function withRaptExtension(parts: string[]): string {
  const p = [...parts];
  const last = p.pop() ?? '';
  const dot = last.lastIndexOf('.');
  const stem = dot > 0 ? last.slice(0, dot) : last;
  return join(...p, `${stem}.rapt`);
}

/** Where Raptor loads the program of a module name from; undefined when its link is not defined. */
export function programPath(name: ModuleName, base: string, links: Record<string, string>): string | undefined {
  const end = withRaptExtension(name.parts);
  if (name.root.kind === 'absolute') return `/${end}`;
  if (name.root.kind === 'package') {
    if (!Object.hasOwn(links, name.root.name)) return undefined;
    return resolve(base, links[name.root.name], end);
  }
  return resolve(base, end);
}

/** resolve_logical_path: "$NAME" components become the link's path. Throws (exit 2) on an undefined link. */
export function resolveLogicalPath(path: string, links: Record<string, string>, where: string): string {
  const comps = path.split('/').map((c) => {
    if (!c.startsWith('$')) return c;
    const link = c.slice(1);
    if (!Object.hasOwn(links, link)) {
      throw new UsageError(`${where}: "${path}" names the link ${c}, which neither [raptor.link] nor -L defines`,
        `Add it to [raptor.link] (${link} = "path"), or give -L ${link} PATH.`);
    }
    return links[link];
  });
  // Raptor's Utf8PathBuf::from_iter: an absolute link replaces what came before it.
  let out = path.startsWith('/') ? '/' : '';
  for (const c of comps) out = isAbsolute(c) ? c : out === '' ? c : join(out, c);
  return out;
}

/** The links a make sees: -L's, then [raptor.link]'s over them. */
export function mergeLinks(fromFile: Record<string, string>, fromCli: Record<string, string>): Record<string, string> {
  return { ...fromCli, ...fromFile };
}
