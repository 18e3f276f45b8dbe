// A run's `input` on disk. In Raptor, input names build targets (test ->
// test.rapt) that the builder sees as one merged overlay. part-image reads
// paths instead: one directory, tar or layer stack; or several directories,
// merged in order as the layers of an ad-hoc layer stack (the first at the
// bottom, as overlayfs lowerdirs are listed in Raptor's overlay). An input
// that names a Raptor target is explained: how to export it.
import { stat, symlink, writeFile } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import type { Scope } from '../cleanup.js';
import { InputError } from '../errors.js';
import type { RaptorConfig } from './toml.js';
import type { RunPlan } from './plan.js';
import { log } from '../log.js';

const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

/** Where Raptor would look for the target a module name like "test", "os.base" or "$rbuild.base" names. */
export function raptorModuleCandidates(spec: string, config: RaptorConfig): string[] {
  const m = /^\$([^.]*)\.(.+)$/.exec(spec);
  let root = config.dir;
  let name = spec;
  if (m) {
    if (m[1] !== '') {
      if (!Object.hasOwn(config.links, m[1])) return [];
      root = join(config.dir, config.links[m[1]]);
    }
    name = m[2];
  }
  name = name.replace(/@.*$/, '@'); // instanced names live in NAME@.rapt
  if (!/^[A-Za-z0-9_@.-]+$/.test(name)) return [];
  return [join(root, `${name.split('.').join('/')}.rapt`), join(root, `${name}.rapt`)];
}

export function exportHint(spec: string): string {
  const target = spec.replace(/^\$\.?/, '');
  const dir = basename(target.replace(/\./g, '-'));
  return [
    'part-image reads a directory, a tar archive or a layer stack, not a Raptor target. Either export the target and point input at it:',
    `  - a tar (keeps owners and xattrs): \`sudo raptor run export-tar -I ${spec} -O ${dir}.tar\` (it builds the target first),`,
    `    with export-tar.rapt from docs/raptor.md, and input = "${dir}.tar";`,
    `  - a directory: unpack that tar as root (\`tar -xpf ${dir}.tar --xattrs --xattrs-include='*' --numeric-owner -C ${dir}.root\`), input = "${dir}.root";`,
    '  - a layer stack: the layer folders plus a raptor.json listing them, bottom first (docs/layer-stack.md);',
    'or use part-image as the Raptor builder itself (docs/raptor.md, builder-container mode): Raptor then mounts the target at /input.',
  ].join('\n');
}

/** The error for an input path that does not exist: a Raptor target, or nothing at all. */
export async function missingInputError(plan: RunPlan, spec: string, abs: string, config: RaptorConfig): Promise<InputError> {
  for (const rapt of raptorModuleCandidates(spec, config)) {
    if (await exists(rapt)) {
      return new InputError(`run ${plan.name}: input "${spec}" is the Raptor target ${relative(config.dir, rapt)}, not a path (${abs} does not exist)`, exportHint(spec));
    }
  }
  return new InputError(`run ${plan.name}: input "${spec}" is neither a path (${abs} does not exist) nor a Raptor target beside ${config.file}`,
    `Relative inputs resolve against the folder of the Raptor.toml.\n${exportHint(spec)}`);
}

const STACK_HINT =
  'To merge several trees, make them the layers of one layer stack: a folder holding the layer folders and a raptor.json ' +
  '{"layers": ["base", "app"]} (bottom first, docs/layer-stack.md), and give input = that folder.';

/**
 * The path buildImage reads for this run. Several inputs must each be a plain
 * directory; they become a temporary layer stack (symlinks + raptor.json) in `scope`.
 */
export async function resolveRunInput(plan: RunPlan, config: RaptorConfig, scope: Scope): Promise<string> {
  const kinds: ('dir' | 'stack' | 'file')[] = [];
  for (const [i, abs] of plan.inputs.entries()) {
    const st = await stat(abs).catch(() => undefined);
    if (!st) throw await missingInputError(plan, plan.inputSpecs[i], abs, config);
    if (!st.isDirectory() && !st.isFile()) throw new InputError(`run ${plan.name}: input ${abs} is neither a directory nor a file`);
    kinds.push(st.isFile() ? 'file' : (await exists(join(abs, 'raptor.json'))) ? 'stack' : 'dir');
    // Raptor reads a bare name as a target even when a folder of that name exists: say which one we took.
    if (!plan.inputSpecs[i].includes('/')) {
      for (const rapt of raptorModuleCandidates(plan.inputSpecs[i], config)) {
        if (await exists(rapt)) {
          log.warn(`run ${plan.name}: input "${plan.inputSpecs[i]}" is read as the path ${abs}; Raptor would read it as the target ${rapt}`);
          break;
        }
      }
    }
  }
  if (plan.inputs.length === 1) return plan.inputs[0];
  const odd = kinds.findIndex((k) => k !== 'dir');
  if (odd >= 0) {
    const what = kinds[odd] === 'file' ? 'a file (tar archive)' : 'a layer stack';
    throw new InputError(`run ${plan.name}: input lists ${plan.inputs.length} entries and "${plan.inputSpecs[odd]}" is ${what}; ` +
      'several inputs are merged only when each is a plain directory', STACK_HINT);
  }
  const stack = await scope.tempDir('part-image-make-layers-');
  const layers = plan.inputs.map((abs, i) => `${String(i).padStart(2, '0')}-${basename(abs) || 'root'}`);
  for (const [i, abs] of plan.inputs.entries()) await symlink(abs, join(stack, layers[i]));
  await writeFile(join(stack, 'raptor.json'), `${JSON.stringify({ layers })}\n`);
  return stack;
}
