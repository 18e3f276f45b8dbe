import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

// The layer order of src/, top first, as README.md's "src/ layout" states it.
// A module may import from its own unit (a folder, or a file at the top of
// src/) and from any layer below its own; never from a layer above, and never
// from another unit of its own layer (units of one layer are peers: code they
// both need moves down). The base files form one unit.
const BASE = ['errors.ts', 'log.ts', 'cleanup.ts', 'stale.ts', 'types.ts', 'schema.ts', 'version.ts', 'packages.ts', 'memory.ts', 'threads.ts'];
const LAYERS: string[][] = [
  ['bin.ts', 'bin/'],
  ['cli.ts', 'index.ts'],
  ['commands/'],
  ['pipeline.ts', 'doctor.ts'],
  ['stages/', 'report/'],
  ['golden/'],
  ['vm/'],
  ['boot/'],
  ['build/'],
  ['source/'],
  ['image/', 'input/', 'demo/'],
  ['walk/'],
  ['raptor/'],
  ['manifest/'],
  ['tools/'],
  ['exec.ts'],
  ['base'],
];

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src');

/** The unit of a path relative to src/: its top folder, or the file itself. */
function unitOf(rel: string): string {
  const slash = rel.indexOf('/');
  if (slash >= 0) return rel.slice(0, slash + 1);
  return BASE.includes(rel) ? 'base' : rel;
}

function layerOf(unit: string): number {
  return LAYERS.findIndex((layer) => layer.includes(unit));
}

/** Every relative import of one file (static, type-only, re-exports and dynamic import()). */
function relativeImports(source: string): string[] {
  return ts.preProcessFile(source, true, true).importedFiles.map((f) => f.fileName).filter((name) => name.startsWith('.'));
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((d) => d.isFile() && d.name.endsWith('.ts'))
    .map((d) => path.relative(SRC, path.join(d.parentPath, d.name)).split(path.sep).join('/'))
    .sort();
}

/** One line per import that breaks the order: "FILE imports SPEC (why)". */
function violations(file: string, specs: string[]): string[] {
  const out: string[] = [];
  const from = unitOf(file);
  const fromLayer = layerOf(from);
  for (const spec of specs) {
    const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)).replace(/\.js$/, '.ts');
    if (target.startsWith('..')) {
      out.push(`src/${file} imports ${spec} (outside src/)`);
      continue;
    }
    const to = unitOf(target);
    if (to === from) continue;
    const toLayer = layerOf(to);
    if (toLayer < 0) out.push(`src/${file} imports ${spec} (${to} is in no layer)`);
    else if (toLayer < fromLayer) out.push(`src/${file} imports ${spec} (upward: layer ${toLayer + 1} ${to} above layer ${fromLayer + 1} ${from})`);
    else if (toLayer === fromLayer) out.push(`src/${file} imports ${spec} (peers in layer ${toLayer + 1}: ${from} and ${to})`);
  }
  return out;
}

describe('layers', () => {
  it('the checker sees every kind of import, and judges them by the table', () => {
    const specs = relativeImports(
      [
        "import { a } from '../vm/run.js';",
        "import type { B } from './b.js';",
        "export { c } from '../../stages/x.js';",
        "import {\n  d,\n  e,\n} from '../exec.js';",
        "const f = await import('../pipeline.js');",
        "import { readFile } from 'node:fs/promises';",
      ].join('\n'),
    );
    expect(specs).toEqual(['../vm/run.js', './b.js', '../../stages/x.js', '../exec.js', '../pipeline.js']);
    expect(violations('boot/probe.ts', specs)).toEqual([
      'src/boot/probe.ts imports ../vm/run.js (upward: layer 7 vm/ above layer 8 boot/)',
      'src/boot/probe.ts imports ../../stages/x.js (outside src/)',
      'src/boot/probe.ts imports ../pipeline.js (upward: layer 4 pipeline.ts above layer 8 boot/)',
    ]);
    expect(violations('image/a.ts', ['../input/dir.js', '../manifest/entry.js'])).toEqual([
      'src/image/a.ts imports ../input/dir.js (peers in layer 11: image/ and input/)',
    ]);
    expect(violations('nowhere/x.ts', ['../errors.js'])).toEqual([]);
    expect(layerOf(unitOf('nowhere/x.ts'))).toBe(-1);
  });

  const files = sourceFiles(SRC);

  it('every module of src/ belongs to a layer', () => {
    expect(files.length).toBeGreaterThan(50);
    const homeless = files.filter((f) => layerOf(unitOf(f)) < 0);
    expect(homeless, `add these to the layer table in test/layers.test.ts and README.md:\n${homeless.join('\n')}`).toEqual([]);
  });

  it('every import points down the layers', () => {
    const found = files.flatMap((f) => violations(f, relativeImports(readFileSync(path.join(SRC, f), 'utf8'))));
    expect(found, `imports against the layer order:\n${found.join('\n')}`).toEqual([]);
  });
});
