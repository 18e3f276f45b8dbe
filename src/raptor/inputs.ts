// A part-image run's `input` on disk. In Raptor every input is a module name:
// the target NAME.rapt, built and mounted at /input (make/maker.rs loads each
// input with ModuleName::from). part-image also reads paths (a directory, a
// tar, a layers mount) so that it can build without Raptor. So each input is
// either a path or a Raptor target, never both: a name that is both (./test
// and test.rapt) is ambiguous and refused (exit 2, naming both), and one that
// is a target can only be built by Raptor: the message gives the command.
import { stat, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Scope } from '../cleanup.js';
import { InputError, UsageError } from '../errors.js';
import type { RaptorConfig } from './toml.js';
import type { RunPlan } from './plan.js';
import { parseModuleName, programPath, resolveLogicalPath } from './module-name.js';

const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

export type InputKind =
  | { kind: 'path'; spec: string; path: string }
  | { kind: 'target'; spec: string; rapt: string };

/** Is `spec` a path, a Raptor target, or (exit 2) both or neither? */
export async function classifyInput(run: string, spec: string, config: RaptorConfig, links: Record<string, string>): Promise<InputKind> {
  const name = parseModuleName(spec);
  const rapt = programPath(name, config.dir, links);
  if (name.root.kind === 'package' && rapt === undefined && !spec.includes('/')) {
    throw new UsageError(`run ${run}: input "${spec}" names the link $${name.root.name}, which neither [raptor.link] nor -L defines`,
      `Add it to [raptor.link] (${name.root.name} = "path"), or give -L ${name.root.name} PATH.`);
  }
  const logical = spec.split('/').some((c) => c.startsWith('$') && !Object.hasOwn(links, c.slice(1))) ? undefined : resolveLogicalPath(spec, links, `run ${run} input`);
  const path = logical === undefined ? undefined : isAbsolute(logical) ? logical : resolve(config.dir, logical);
  const [isTarget, isPath] = await Promise.all([rapt ? exists(rapt) : false, path ? exists(path) : false]);
  if (isTarget && isPath) {
    throw new UsageError(`run ${run}: input "${spec}" is ambiguous: it is the Raptor target ${rapt} and the path ${path}`,
      'Raptor builds the target; part-image would read the path. Rename one of them, or write the path with a slash ("./NAME") ' +
      'if you mean the folder and have no use for the .rapt here.');
  }
  if (isTarget) return { kind: 'target', spec, rapt: rapt! };
  if (isPath) return { kind: 'path', spec, path: path! };
  throw new InputError(`run ${run}: input "${spec}" is neither a Raptor target (${rapt ?? 'no .rapt'} does not exist) nor a path (${path ?? spec} does not exist)`,
    'A bare name is a Raptor target NAME.rapt beside the Raptor.toml; part-image also reads a directory, a tar or a layers mount there.');
}

/** The folder of part-image's own Raptor builder (builder/part-image.rapt in the package). */
export function builderDir(): string {
  return fileURLToPath(new URL('../../builder/', import.meta.url)).replace(/\/$/, '');
}

/** Quotes a word for a POSIX shell, only when it needs it. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_/.,:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The command that builds this run with Raptor and part-image as its builder:
 * `raptor run` of builder/part-image.rapt with the run's input, output and env,
 * from the Raptor.toml's folder (where Raptor resolves module names), with -L
 * for every link the input needs. A missing builder package is made first.
 */
export async function raptorCommand(plan: RunPlan, config: RaptorConfig, links: Record<string, string>): Promise<string> {
  const dir = builderDir();
  let link = 'pib';
  for (let i = 2; Object.hasOwn(links, link); i++) link = `pib${i}`;
  const words = ['sudo', 'raptor', 'run', '-L', link, dir];
  const used = new Set<string>();
  for (const spec of plan.inputSpecs) {
    const m = parseModuleName(spec);
    if (m.root.kind === 'package' && !used.has(m.root.name)) {
      used.add(m.root.name);
      words.push('-L', m.root.name, links[m.root.name]);
    }
  }
  words.push(`$${link}.part-image`);
  for (const spec of plan.inputSpecs) words.push('-I', spec);
  words.push('-O', plan.output);
  for (const [k, v] of Object.entries(plan.env)) words.push('-e', `${k}=${v}`);
  const run = `cd ${shellQuote(config.dir)} && ${words.map(shellQuote).join(' ')}`;
  if (await exists(join(dir, 'part-image.tgz'))) return run;
  const root = dirname(dir);
  const pack = `(cd ${shellQuote(root)} && npm pack --ignore-scripts --pack-destination ${shellQuote(dir)} && mv ${shellQuote(dir)}/part-image-*.tgz ${shellQuote(join(dir, 'part-image.tgz'))})`;
  return `${pack} && ${run}`;
}

const STACK_HINT =
  'To merge several trees, make them the layers of one layers mount: a folder holding the layer folders and a raptor.json ' +
  '{"targets": ["root"], "layers": {"root": ["base", "app"]}} (bottom first, docs/layer-stack.md), and give input = that folder.';

/**
 * The path buildImage reads for this run. Several inputs must each be a plain
 * directory; they become a temporary layers mount (symlinks + raptor.json) in
 * `scope`, the first at the bottom. (Raptor's own part-image builder takes one
 * input only: its --overlay mount refuses more.)
 */
export async function resolveRunInput(plan: RunPlan, inputs: InputKind[], scope: Scope): Promise<string> {
  const paths = inputs.map((i) => {
    if (i.kind !== 'path') throw new Error(`resolveRunInput: ${i.spec} is a Raptor target`);
    return i.path;
  });
  if (paths.length === 1) return paths[0];
  for (const [i, p] of paths.entries()) {
    const st = await stat(p);
    const stack = st.isDirectory() && (await exists(join(p, 'raptor.json')));
    if (!st.isDirectory() || stack) {
      const what = stack ? 'a layer stack' : 'a file (tar archive)';
      throw new InputError(`run ${plan.name}: input lists ${paths.length} entries and "${plan.inputSpecs[i]}" is ${what}; ` +
        'several inputs are merged only when each is a plain directory', STACK_HINT);
    }
  }
  const stack = await scope.tempDir('part-image-make-layers-');
  const layers = paths.map((abs, i) => `${String(i).padStart(2, '0')}-${basename(abs) || 'root'}`);
  for (const [i, abs] of paths.entries()) await symlink(abs, join(stack, layers[i]));
  await writeFile(join(stack, 'raptor.json'), `${JSON.stringify({ targets: [plan.name], layers: { [plan.name]: layers } })}\n`);
  return stack;
}

export const rel = (from: string, p: string): string => relative(from, p) || '.';
