// Every extended attribute of a tree in one getfattr process:
//   getfattr -h -R -P -d -m - -e hex --absolute-names DIR
// -R walks the tree and -P does not descend through symlinked directories,
// but only -h (--no-dereference) makes getfattr read a symlink's own xattrs
// (llistxattr) instead of its target's: without it a dangling symlink is an
// error and a symlink reports its target's xattrs. `-m -` matches every name
// (security.*, system.posix_acl_*, trusted.* when root, user.*), -e hex keeps
// values byte-exact.
//
// getfattr quotes some bytes of file names ("\n", "\r", "\\") and of attribute
// names (also "=") as a backslash and three octal digits, e.g. "\012" for a
// newline and "\134" for a backslash; every other byte is printed raw.
// parseGetfattrDump() undoes that quoting.
import { InputError } from '../errors.js';
import { run } from '../exec.js';

/** Host path (as getfattr printed it, unquoted) -> xattr name -> lowercase hex of the raw value. */
export type XattrDump = Map<string, Record<string, string>>;

export function buildGetfattrArgs(dir: string): string[] {
  return ['-h', '-R', '-P', '-d', '-m', '-', '-e', 'hex', '--absolute-names', dir];
}

const isOctal = (c: number | undefined): boolean => c !== undefined && c >= 0x30 && c <= 0x37;

/** Undo getfattr's quoting: a backslash and three octal digits stand for one byte. */
export function unquoteGetfattr(s: string): string {
  if (!s.includes('\\')) return s;
  const src = Buffer.from(s, 'utf8');
  const out = Buffer.alloc(src.length);
  let o = 0;
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c === 0x5c && isOctal(src[i + 1]) && isOctal(src[i + 2]) && isOctal(src[i + 3])) {
      out[o++] = (((src[i + 1] - 0x30) << 6) | ((src[i + 2] - 0x30) << 3) | (src[i + 3] - 0x30)) & 0xff;
      i += 3;
    } else {
      out[o++] = c;
    }
  }
  return out.subarray(0, o).toString('utf8');
}

/** A value as getfattr prints it (hex "0x..", base64 "0s..", or quoted text) -> lowercase hex. */
export function valueToHex(value: string): string {
  if (value.startsWith('0x') || value.startsWith('0X')) {
    const hex = value.slice(2).toLowerCase();
    if (!/^[0-9a-f]*$/.test(hex) || hex.length % 2 !== 0) throw new Error(`getfattr printed a malformed hex value: ${value}`);
    return hex;
  }
  if (value.startsWith('0s') || value.startsWith('0S')) return Buffer.from(value.slice(2), 'base64').toString('hex');
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
    return Buffer.from(unquoteGetfattr(value.slice(1, -1)), 'utf8').toString('hex');
  }
  throw new Error(`getfattr printed a value in an unknown encoding: ${value}`);
}

/**
 * Parse the output of `getfattr -d -e hex` (one "# file: PATH" block per path
 * that has xattrs, blocks separated by blank lines). Pure.
 */
export function parseGetfattrDump(text: string): XattrDump {
  const out: XattrDump = new Map();
  let current: Record<string, string> | undefined;
  const lines = text.split('\n');
  for (const [i, line] of lines.entries()) {
    if (line === '') {
      current = undefined;
      continue;
    }
    if (line.startsWith('# file: ')) {
      const path = unquoteGetfattr(line.slice('# file: '.length));
      current = out.get(path);
      if (!current) {
        current = {};
        out.set(path, current);
      }
      continue;
    }
    if (!current) throw new Error(`getfattr output line ${i + 1} is outside a "# file:" block: ${JSON.stringify(line)}`);
    // Names quote "=", so the first "=" separates name and value. An empty
    // value may be printed without "=" at all.
    const eq = line.indexOf('=');
    const name = unquoteGetfattr(eq < 0 ? line : line.slice(0, eq));
    current[name] = eq < 0 ? '' : valueToHex(line.slice(eq + 1));
  }
  return out;
}

export const READ_HINT =
  'Run part-image as root (sudo) so that it can read every file and directory of the input; ' +
  'changing the modes instead would change the image.';

/** Read every xattr under `dir` (an absolute path) in one process. */
export async function readXattrTree(dir: string): Promise<XattrDump> {
  const res = await run('getfattr', buildGetfattrArgs(dir), { okCodes: [0, 1] });
  if (res.exitCode === 1) {
    // A file system without xattr support is not an error: it has none.
    const problems = res.stderr
      .split('\n')
      .filter((l) => l.trim() !== '' && !/Operation not supported$/.test(l));
    if (problems.length > 0) {
      const shown = problems.slice(0, 5).join('\n');
      const more = problems.length > 5 ? `\n(and ${problems.length - 5} more)` : '';
      throw new InputError(`cannot read the extended attributes of the input:\n${shown}${more}`, READ_HINT);
    }
  }
  return parseGetfattrDump(res.stdout);
}
