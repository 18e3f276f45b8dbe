// The FIELDS table: it agrees with the JSON schemas, and each row compares,
// names and exports its field as the diff, the messages and mtree expect.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DELTA_CODES, FIELDS, PATH_KINDS, type DiffOptions } from '../src/manifest/fields.js';
import { deltaMessage, diffManifests } from '../src/manifest/diff.js';
import { formatDiffText } from '../src/manifest/diff-format.js';
import { comparePaths, makeManifest, normalizeEntry } from '../src/manifest/entry.js';
import { serializeManifest } from '../src/manifest/serialize.js';
import { MTREE_KEYWORDS, mtreeLine } from '../src/manifest/mtree.js';
import type { ManifestEntry } from '../src/types.js';

interface PropSchema { description?: string }
interface EntrySchema {
  required: string[];
  properties: Record<string, PropSchema>;
  allOf: { if: { properties: { type: { const?: string; enum?: string[] } } }; then: { required: string[] } }[];
}

function readSchema(name: string): unknown {
  return JSON.parse(readFileSync(new URL(`../schema/${name}.schema.json`, import.meta.url), 'utf8'));
}

const entrySchema = (readSchema('manifest') as { properties: { entries: { items: EntrySchema } } }).properties.entries.items;

describe('FIELDS and schema/manifest.schema.json agree', () => {
  it('has the same keys, in the same order (the serialized order)', () => {
    expect(FIELDS.map((f) => f.key)).toEqual(Object.keys(entrySchema.properties));
  });

  it('gives each field the schema\'s description', () => {
    for (const f of FIELDS) expect(entrySchema.properties[f.key].description, f.key).toBe(f.description);
  });

  it('requires the same fields in every entry', () => {
    expect(FIELDS.filter((f) => f.required === true).map((f) => f.key)).toEqual(entrySchema.required);
  });

  it('requires the same fields by entry type', () => {
    const fromSchema = new Map<string, string[]>();
    for (const rule of entrySchema.allOf) {
      const t = rule.if.properties.type;
      for (const type of t.enum ?? [t.const ?? '']) {
        for (const key of rule.then.required) fromSchema.set(key, [...(fromSchema.get(key) ?? []), type]);
      }
    }
    const fromTable = new Map(FIELDS.flatMap((f) => (Array.isArray(f.required) ? [[f.key, [...f.required]] as const] : [])));
    expect(new Map([...fromTable].map(([k, v]) => [k, [...v].sort()]))).toEqual(new Map([...fromSchema].map(([k, v]) => [k, [...v].sort()])));
    expect(fromTable.size).toBeGreaterThan(0);
  });

  it('has the delta codes that golden allow rules may name', () => {
    const allow = readSchema('golden-allow') as { properties: { allow: { items: { properties: { code: { enum: string[] } } } } } };
    expect([...DELTA_CODES].sort()).toEqual([...allow.properties.allow.items.properties.code.enum].sort());
  });
});

describe('FIELDS is consistent with itself', () => {
  it('one kind per delta code, shared where two fields give the same code (content)', () => {
    const kinds = [...PATH_KINDS, ...FIELDS.flatMap((f) => f.kinds)];
    for (const k of kinds) expect(kinds.filter((o) => o.code === k.code).every((o) => o === k), k.code).toBe(true);
    expect(FIELDS.find((f) => f.key === 'size')?.kinds).toContain(FIELDS.find((f) => f.key === 'sha256')?.kinds[0]);
  });

  it('every mtree keyword written comes from one row, and every row keyword is written', () => {
    const fromRows = FIELDS.flatMap((f) => (f.mtree ? [f.mtree.keyword] : []));
    expect(new Set(fromRows).size).toBe(fromRows.length);
    expect([...fromRows].sort()).toEqual([...MTREE_KEYWORDS].sort());
  });

  it('a field that compares names the kinds it gives', () => {
    for (const f of FIELDS) if (f.compare) expect(f.kinds.length, f.key).toBeGreaterThan(0);
  });
});

const HASH_A = 'ab'.repeat(32);
const HASH_B = 'cd'.repeat(32);
const FILE: ManifestEntry = { path: '/f', type: 'file', mode: '0644', uid: 0, gid: 0, size: 3, sha256: HASH_A };
const LINK: ManifestEntry = { path: '/f', type: 'symlink', mode: '0777', uid: 0, gid: 0, size: 1, target: 'a' };
const CHAR: ManifestEntry = { path: '/f', type: 'char', mode: '0600', uid: 0, gid: 0, rdev: '1,3' };

interface Case {
  name: string;
  expected: ManifestEntry;
  actual: Partial<ManifestEntry>;
  opts?: DiffOptions;
  /** code, field, expected, actual of each delta. */
  deltas: [string, string, unknown, unknown][];
  /** deltaMessage of the first delta. */
  message?: string;
  /** The text diff's line for the first delta, trimmed. */
  line?: string;
}

const CASES: Case[] = [
  { name: 'type, and nothing else after it', expected: FILE, actual: { type: 'dir', mode: '0755', size: undefined, sha256: undefined },
    deltas: [['type', 'type', 'file', 'dir']], message: '/f: type differs: expected file, got dir', line: 'type  file -> dir' },
  { name: 'mode', expected: FILE, actual: { mode: '4755' },
    deltas: [['mode', 'mode', '0644', '4755']], message: '/f: mode differs: expected 0644, got 4755', line: 'mode  0644 -> 4755' },
  { name: 'uid', expected: FILE, actual: { uid: 1000 },
    deltas: [['uid', 'uid', 0, 1000]], message: '/f: owner (uid) differs: expected 0, got 1000', line: 'uid  0 -> 1000' },
  { name: 'gid', expected: FILE, actual: { gid: 50 },
    deltas: [['gid', 'gid', 0, 50]], message: '/f: group (gid) differs: expected 0, got 50', line: 'gid  0 -> 50' },
  { name: 'size, hiding the hash', expected: FILE, actual: { size: 4, sha256: HASH_B },
    deltas: [['content', 'size', 3, 4]], message: '/f: content differs: expected 3, got 4', line: 'content size  3 -> 4' },
  { name: 'size without content', expected: FILE, actual: { size: 4, sha256: HASH_B }, opts: { ignoreContent: true },
    deltas: [['size', 'size', 3, 4]], message: '/f: size differs: expected 3, got 4', line: 'size  3 -> 4' },
  { name: 'sha256 of the same size', expected: FILE, actual: { sha256: HASH_B },
    deltas: [['content', 'sha256', HASH_A, HASH_B]], message: `/f: content differs: expected ${HASH_A}, got ${HASH_B}`,
    line: 'content sha256  abababababababab… -> cdcdcdcdcdcdcdcd…' },
  { name: 'sha256 not compared without content', expected: FILE, actual: { sha256: HASH_B }, opts: { ignoreContent: true }, deltas: [] },
  { name: 'sha256 not compared when one side has none', expected: FILE, actual: { sha256: undefined }, deltas: [] },
  { name: 'size of a symlink is not compared', expected: LINK, actual: { size: 9 }, deltas: [] },
  { name: 'symlink target', expected: LINK, actual: { target: 'b' },
    deltas: [['link', 'target', 'a', 'b']], message: '/f: symlink target differs: expected a, got b', line: 'target  a -> b' },
  { name: 'device number', expected: CHAR, actual: { rdev: '1,5' },
    deltas: [['rdev', 'rdev', '1,3', '1,5']], message: '/f: device number differs: expected 1,3, got 1,5', line: 'rdev  1,3 -> 1,5' },
  { name: 'xattrs, one delta per name in name order', expected: { ...FILE, xattrs: { 'user.z': '00', 'user.note': '68656c6c6f' } },
    actual: { xattrs: { 'user.z': '01', 'user.new': '00ff' } },
    deltas: [['xattr', 'user.new', undefined, '00ff'], ['xattr', 'user.note', '68656c6c6f', undefined], ['xattr', 'user.z', '00', '01']],
    message: '/f: xattr user.new differs: expected (none), got 00ff', line: 'xattr user.new   (none) -> 00ff' },
  { name: 'xattr text shown as text', expected: { ...FILE, xattrs: { 'user.note': '68656c6c6f' } }, actual: { xattrs: undefined },
    deltas: [['xattr', 'user.note', '68656c6c6f', undefined]], line: 'xattr user.note  "hello" -> (none)' },
  { name: 'long binary xattr cut with its length', expected: { ...FILE, xattrs: { 'security.capability': '01'.repeat(20) } }, actual: { xattrs: undefined },
    deltas: [['xattr', 'security.capability', '01'.repeat(20), undefined]],
    line: `xattr security.capability  ${'01'.repeat(16)}… (20 bytes) -> (none)` },
  { name: 'nlink, as the hardlink group', expected: { ...FILE, nlink: 2 }, actual: { nlink: undefined },
    deltas: [['hardlink', 'hardlink', 'nlink 2', 'nlink 1']], message: '/f: hardlink group differs: expected nlink 2, got nlink 1',
    line: 'hardlink  nlink 2 -> nlink 1' },
  { name: 'hardlink', expected: { ...FILE, nlink: 2, hardlink: '/a' }, actual: { nlink: 2, hardlink: '/b' },
    deltas: [['hardlink', 'hardlink', '/a', '/b']], line: 'hardlink  /a -> /b' },
  { name: 'mtime not compared by default', expected: { ...FILE, mtime: 1 }, actual: { mtime: 2 }, deltas: [] },
  { name: 'mtime on request', expected: { ...FILE, mtime: 1 }, actual: { mtime: 2 }, opts: { compareMtime: true },
    deltas: [['mtime', 'mtime', 1, 2]], message: '/f: mtime differs: expected 1, got 2', line: 'mtime  1 -> 2' },
  { name: 'several fields, in table order', expected: { ...FILE, mtime: 1 }, actual: { mode: '0600', gid: 5, size: 9, mtime: 2 },
    opts: { compareMtime: true }, deltas: [['mode', 'mode', '0644', '0600'], ['gid', 'gid', 0, 5], ['content', 'size', 3, 9], ['mtime', 'mtime', 1, 2]] },
];

describe('compare and format, per field', () => {
  it.each(CASES)('$name', (c) => {
    const actual = { ...c.expected, ...c.actual } as ManifestEntry;
    const deltas = diffManifests(makeManifest([c.expected]), makeManifest([actual]), c.opts);
    expect(deltas.map((d) => [d.code, d.field, d.expected, d.actual])).toEqual(c.deltas);
    for (const d of deltas) expect(d.path).toBe('/f');
    if (c.message) expect(deltaMessage(deltas[0])).toBe(c.message);
    if (c.line) expect(formatDiffText(deltas).split('\n')[1].trim()).toBe(c.line);
  });

  it('a path on one side only', () => {
    const deltas = diffManifests(makeManifest([{ ...FILE, path: '/a' }]), makeManifest([{ ...LINK, path: '/b' }]));
    expect(deltas).toEqual([{ code: 'missing', path: '/a', expected: 'file' }, { code: 'extra', path: '/b', actual: 'symlink' }]);
    expect(deltas.map(deltaMessage)).toEqual(['/a: missing from the image', '/b: not in the input']);
  });
});

/** Every keyword, device and xattr included (the default leaves those two out). */
const ALL = { keywords: MTREE_KEYWORDS };

describe('serialization and mtree, per field', () => {
  it('writes keys in table order and drops empty xattrs', () => {
    const shuffled = { mtime: 5, xattrs: {}, gid: 0, sha256: HASH_A, path: '/f', size: 3, uid: 0, mode: '0644', type: 'file' } as ManifestEntry;
    expect(Object.keys(normalizeEntry(shuffled))).toEqual(['path', 'type', 'mode', 'uid', 'gid', 'size', 'sha256', 'mtime']);
    const x = normalizeEntry({ ...FILE, xattrs: { 'user.b': '01', 'user.a': '02' } });
    expect(Object.keys(x.xattrs ?? {})).toEqual(['user.a', 'user.b']);
  });

  it('gives an entry already in normal form back as it is, and copies every other', () => {
    const normal: ManifestEntry = { path: '/f', type: 'file', mode: '0644', uid: 0, gid: 0, size: 3, xattrs: { 'user.a': '01', 'user.b': '02' }, mtime: 1 };
    expect(normalizeEntry(normal)).toBe(normal);
    const { xattrs: _, ...bare } = normal;
    for (const [e, want] of [
      [{ ...normal, xattrs: { 'user.b': '02', 'user.a': '01' } }, normal], // xattr names out of order
      [{ ...normal, xattrs: {} }, bare], // empty xattrs are dropped
      [{ ...normal, sha256: undefined }, normal], // an undefined field is dropped
      [{ mtime: 1, ...normal }, normal], // keys out of order
      [{ ...normal, extra: 1 }, normal], // not a field
    ] as [ManifestEntry, ManifestEntry][]) {
      const n = normalizeEntry(e);
      expect(n).not.toBe(e);
      expect(JSON.stringify(n)).toBe(JSON.stringify(want));
    }
    // Serializing without a field leaves the entry as it was.
    const m = makeManifest([normal]);
    expect(serializeManifest(m, { omit: ['mtime'] })).not.toContain('mtime');
    expect(m.entries[0].mtime).toBe(1);
  });

  it('orders paths by their UTF-8 bytes, surrogate pairs included', () => {
    const chars = ['a', 'b', '/', '.', ' ', '\u00e9', '\u0800', '\ud7ff', '\ue000', '\uff5e', '\ufffd', '\u{10000}', '\u{1f600}', '\u{10ffff}'];
    let seed = 7;
    const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    const paths = Array.from({ length: 3000 }, () => `/${Array.from({ length: 1 + rand(6) }, () => chars[rand(chars.length)]).join('')}`);
    const bytes = [...paths].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect([...paths].sort(comparePaths)).toEqual(bytes);
    for (let i = 0; i < 2000; i++) {
      const [x, y] = [paths[rand(paths.length)], paths[rand(paths.length)]];
      expect(Math.sign(comparePaths(x, y))).toBe(Math.sign(Buffer.compare(Buffer.from(x), Buffer.from(y))));
    }
  });

  it.each([
    ['a file with every keyword', { ...FILE, nlink: 2, mtime: 7, xattrs: { 'user.note': '68656c6c6f' } }, ALL,
      `./f type=file mode=0644 uid=0 gid=0 size=3 sha256digest=${HASH_A} nlink=2 xattr.user.note=aGVsbG8=`],
    ['a file without hash, xattrs left out by default', { ...FILE, xattrs: { 'user.note': '68656c6c6f' } }, { hash: false },
      './f type=file mode=0644 uid=0 gid=0 size=3'],
    ['nlink 1 is not written', { ...FILE, nlink: 1, sha256: undefined }, {}, './f type=file mode=0644 uid=0 gid=0 size=3'],
    ['a setuid file: the mode as %#o', { ...FILE, mode: '4755', sha256: undefined }, {}, './f type=file mode=04755 uid=0 gid=0 size=3'],
    ['mode 0000 as %#o', { ...FILE, mode: '0000', sha256: undefined }, {}, './f type=file mode=0 uid=0 gid=0 size=3'],
    ['a symlink: link, vis-encoded, no size', { ...LINK, path: '/a b', target: 'x y' }, {}, './a\\040b type=link mode=0777 uid=0 gid=0 link=x\\040y'],
    ['a char device, device left out by default', CHAR, {}, './f type=char mode=0600 uid=0 gid=0'],
    ['a char device', CHAR, ALL, './f type=char mode=0600 uid=0 gid=0 device=native,1,3'],
    ['a block device', { ...CHAR, type: 'block', rdev: '8,1' }, ALL, './f type=block mode=0600 uid=0 gid=0 device=native,8,1'],
    ['a dir: size and nlink are for files', { path: '/', type: 'dir', mode: '0755', uid: 0, gid: 0, size: 4096, nlink: 3 }, {},
      '. type=dir mode=0755 uid=0 gid=0'],
    ['a fifo with an xattr', { path: '/p', type: 'fifo', mode: '0644', uid: 1, gid: 2, xattrs: { 'user.x': 'ff00' } }, ALL,
      './p type=fifo mode=0644 uid=1 gid=2 xattr.user.x=/wA='],
  ] as [string, ManifestEntry, object, string][])('%s', (_name, e, o, line) => {
    expect(mtreeLine(e, o)).toBe(line);
  });
});
