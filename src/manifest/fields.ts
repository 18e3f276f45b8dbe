// The manifest fields, one row each (after go-mtree's keyword map): the key
// and its place in a serialized entry, the entry types it applies to, how two
// values compare and which delta a difference gives, its mtree(5) keyword,
// and how a person reads it. diff.ts, diff-format.ts, entry.ts and mtree.ts
// read this table; test/fields.test.ts holds it against
// schema/manifest.schema.json. A new field is one row here, one property in
// the schema and one in ManifestEntry. How a value is written to mtree is the
// row's `mtree.words` (the mode as %#o, for one); which keywords exist, in
// what order, and which are written by default is in mtree.ts.
import type { EntryType, ManifestEntry } from '../types.js';
import { visEncode } from './vis.js';

/** The codes of a Delta: two for a path on one side only, the rest from the field rows. */
export type DeltaCode =
  | 'missing' | 'extra' | 'type' | 'mode' | 'uid' | 'gid' | 'content' | 'size'
  | 'link' | 'rdev' | 'xattr' | 'hardlink' | 'mtime';

export interface Delta {
  code: DeltaCode;
  path: string;
  field?: string;
  expected?: unknown;
  actual?: unknown;
}

export interface DiffOptions {
  /** Compare mtimes too (off by default: images and trees rarely agree). */
  compareMtime?: boolean;
  /** Leave out sha256 comparison (manifests made with --no-hash). */
  ignoreContent?: boolean;
  /** Paths present only on the actual side that are not differences (lost+found). */
  ignoreExtra?: (path: string) => boolean;
}

/** One kind of difference: its code and how the messages name it. */
export interface DeltaKind {
  code: DeltaCode;
  /** "mode differs", for the report's finding messages. */
  message: (field?: string) => string;
  /** The name of the line in the text diff ("mode", "xattr user.note"). */
  label: (field?: string) => string;
  /** A value as a person reads it, when a plain string will not do. */
  show?: (v: string) => string;
}

export interface MtreeOptions {
  /** sha256digest of files (default true). */
  hash?: boolean;
  /**
   * The keywords to write (mtree.ts's mtreeKeywords makes the list; in
   * MTREE_KEYWORDS order). Default: those all three readers know, without
   * device (go-mtree 0.4.4 stops on it) and xattr (NetBSD mtree stops on it).
   */
  keywords?: readonly string[];
}

/** An mtree keyword: its name and the `name=value` words of an entry (none when the entry has no value). */
export interface MtreeKeyword {
  keyword: string;
  words: (e: ManifestEntry) => string[];
}

export type FieldKey = keyof ManifestEntry;

export interface Field {
  key: FieldKey;
  /** What the field holds; the same text as the schema's description. */
  description: string;
  /** Compared and written to mtree only for these types; all types when absent. */
  types?: readonly EntryType[];
  /** In every entry (true) or in every entry of these types. */
  required?: true | readonly EntryType[];
  /** A difference in this field hides every other one of the entry (a dir against a file). */
  decisive?: boolean;
  /** The kinds of difference this field gives. */
  kinds: readonly DeltaKind[];
  /** The differences between two entries of the same path (of the same type unless the field is decisive). */
  compare?: (e: ManifestEntry, a: ManifestEntry, opts: DiffOptions) => Omit<Delta, 'path'>[];
  /** The value as serialized, undefined to leave it out (default: as is). */
  normalize?: (v: NonNullable<ManifestEntry[FieldKey]>) => unknown;
  /** Whether normalize() would give the value back unchanged (required with normalize). */
  isNormal?: (v: NonNullable<ManifestEntry[FieldKey]>) => boolean;
  /** Its mtree keyword; a field without one is not exported (hardlink: nlink says it). */
  mtree?: MtreeKeyword;
  /** A value as a person reads it, for any delta that names this field. */
  show?: (v: string) => string;
}

const SHORT_HEX = 16;

function kind(code: DeltaCode, message: string, label: (field?: string) => string = (f) => f ?? code): DeltaKind {
  return { code, message: () => message, label };
}

/** Plain inequality of one key, as one delta. */
function differs(key: FieldKey, code: DeltaCode): NonNullable<Field['compare']> {
  return (e, a) => (e[key] !== a[key] ? [{ code, field: key, expected: e[key], actual: a[key] }] : []);
}

/** Hex xattr values that are printable text are shown as a JSON string, long binary ones cut with their length. */
function showXattr(v: string): string {
  if (!/^([0-9a-f]{2})*$/.test(v)) return v;
  const bytes = Buffer.from(v, 'hex');
  if (bytes.length > 0 && bytes.every((b) => b >= 0x20 && b < 0x7f)) return JSON.stringify(bytes.toString('latin1'));
  return v.length > 32 ? `${v.slice(0, 32)}… (${bytes.length} bytes)` : v;
}

const MTREE_TYPE: Record<EntryType, string> = {
  file: 'file', dir: 'dir', symlink: 'link', char: 'char', block: 'block', fifo: 'fifo', socket: 'socket',
};

function word(keyword: string, value: (e: ManifestEntry) => string | number | undefined): MtreeKeyword {
  return { keyword, words: (e) => { const v = value(e); return v === undefined ? [] : [`${keyword}=${v}`]; } };
}

/** A mode as C's %#o writes it (04755, 0644, 0), the form go-mtree and BSD mtree write and go-mtree compares as a string. */
function cOctal(mode: string): string {
  const n = parseInt(mode, 8);
  return n === 0 ? '0' : `0${n.toString(8)}`;
}

const CONTENT = kind('content', 'content differs', (f) => `content ${f ?? ''}`.trimEnd());
const DEVICES: readonly EntryType[] = ['char', 'block'];

/** The rows in serialized key order. Golden files depend on that order: append only. */
export const FIELDS: readonly Field[] = [
  { key: 'path', description: 'absolute inside the tree; "/" is the root', required: true, kinds: [] },
  {
    key: 'type', description: 'file, dir, symlink, char, block, fifo or socket', required: true, decisive: true,
    kinds: [kind('type', 'type differs')], compare: differs('type', 'type'), mtree: word('type', (e) => MTREE_TYPE[e.type]),
  },
  {
    key: 'mode', description: 'permission and setuid/setgid/sticky bits, 4 octal digits', required: true,
    kinds: [kind('mode', 'mode differs')], compare: differs('mode', 'mode'), mtree: word('mode', (e) => cOctal(e.mode)),
  },
  {
    key: 'uid', description: 'owner, numeric', required: true,
    kinds: [kind('uid', 'owner (uid) differs')], compare: differs('uid', 'uid'), mtree: word('uid', (e) => e.uid),
  },
  {
    key: 'gid', description: 'group, numeric', required: true,
    kinds: [kind('gid', 'group (gid) differs')], compare: differs('gid', 'gid'), mtree: word('gid', (e) => e.gid),
  },
  {
    key: 'size', description: 'bytes of content (files) or of the target (symlinks); compared for files', types: ['file'],
    kinds: [CONTENT, kind('size', 'size differs')],
    compare: (e, a, o) => (e.size !== a.size ? [{ code: o.ignoreContent ? 'size' : 'content', field: 'size', expected: e.size, actual: a.size }] : []),
    mtree: word('size', (e) => e.size),
  },
  {
    key: 'sha256', description: 'lowercase hex sha256 of the content, files only; compared when the sizes agree', types: ['file'],
    kinds: [CONTENT],
    compare: (e, a, o) => (!o.ignoreContent && e.size === a.size && e.sha256 !== undefined && a.sha256 !== undefined && e.sha256 !== a.sha256
      ? [{ code: 'content', field: 'sha256', expected: e.sha256, actual: a.sha256 }] : []),
    mtree: word('sha256digest', (e) => e.sha256 || undefined),
    show: (v) => `${v.slice(0, SHORT_HEX)}…`,
  },
  {
    key: 'target', description: 'symlink target, verbatim', types: ['symlink'], required: ['symlink'],
    kinds: [kind('link', 'symlink target differs')], compare: differs('target', 'link'),
    mtree: word('link', (e) => visEncode(e.target ?? '')),
  },
  {
    key: 'rdev', description: 'major,minor', types: DEVICES, required: DEVICES,
    kinds: [kind('rdev', 'device number differs')], compare: differs('rdev', 'rdev'),
    mtree: word('device', (e) => (e.rdev ? `native,${e.rdev}` : undefined)),
  },
  {
    key: 'xattrs', description: 'xattr name -> lowercase hex of the raw value',
    kinds: [{ code: 'xattr', message: (f) => `xattr ${f} differs`, label: (f) => `xattr ${f}`, show: showXattr }],
    compare: (e, a) => {
      // Most entries have none on either side: no key lists, sets or sorts for them.
      if (e.xattrs === undefined && a.xattrs === undefined) return [];
      const ex = e.xattrs ?? {};
      const ax = a.xattrs ?? {};
      return [...new Set([...Object.keys(ex), ...Object.keys(ax)])].sort()
        .filter((name) => ex[name] !== ax[name])
        .map((name) => ({ code: 'xattr' as const, field: name, expected: ex[name], actual: ax[name] }));
    },
    normalize: (v) => {
      const x = v as Record<string, string>;
      const names = Object.keys(x).sort();
      return names.length === 0 ? undefined : Object.fromEntries(names.map((n) => [n, x[n]]));
    },
    isNormal: (v) => {
      let last: string | undefined;
      for (const name in v as Record<string, string>) {
        if (last !== undefined && !(last < name)) return false;
        last = name;
      }
      return last !== undefined;
    },
    mtree: {
      keyword: 'xattr',
      words: (e) => Object.entries(e.xattrs ?? {}).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))
        .map(([name, hex]) => `xattr.${visEncode(name)}=${Buffer.from(hex, 'hex').toString('base64')}`),
    },
  },
  {
    key: 'nlink', description: 'links inside the tree, files only, when above 1; compared with hardlink', types: ['file'],
    kinds: [], mtree: word('nlink', (e) => (e.nlink && e.nlink > 1 ? e.nlink : undefined)),
  },
  {
    key: 'hardlink', description: 'the first path (in byte order) of the hardlink group, in every other member',
    kinds: [kind('hardlink', 'hardlink group differs')],
    compare: (e, a) => ((e.hardlink ?? null) !== (a.hardlink ?? null) || (e.nlink ?? 1) !== (a.nlink ?? 1)
      ? [{ code: 'hardlink', field: 'hardlink', expected: e.hardlink ?? `nlink ${e.nlink ?? 1}`, actual: a.hardlink ?? `nlink ${a.nlink ?? 1}` }]
      : []),
  },
  {
    key: 'mtime', description: 'seconds since the epoch; read always, compared only on request',
    kinds: [kind('mtime', 'mtime differs')],
    compare: (e, a, o) => (o.compareMtime && e.mtime !== undefined && a.mtime !== undefined && e.mtime !== a.mtime
      ? [{ code: 'mtime', field: 'mtime', expected: e.mtime, actual: a.mtime }] : []),
  },
];

/** The kinds of a path on one side only: no field compares them. */
export const PATH_KINDS: readonly DeltaKind[] = [kind('missing', 'missing from the image'), kind('extra', 'not in the input')];

const byKey = new Map<string, Field>(FIELDS.map((f) => [f.key, f]));
const byCode = new Map<DeltaCode, DeltaKind>([...PATH_KINDS, ...FIELDS.flatMap((f) => f.kinds)].map((k) => [k.code, k]));

export function fieldByKey(key: string | undefined): Field | undefined {
  return key === undefined ? undefined : byKey.get(key);
}

export function deltaKind(code: DeltaCode): DeltaKind {
  const k = byCode.get(code);
  if (!k) throw new Error(`unknown delta code ${code}`);
  return k;
}

/** Every delta code, path kinds first, then in field order. */
export const DELTA_CODES: readonly DeltaCode[] = [...byCode.keys()];

/** Whether a field applies to entries of this type. */
export function appliesTo(f: Field, type: EntryType): boolean {
  return f.types === undefined || f.types.includes(type);
}
