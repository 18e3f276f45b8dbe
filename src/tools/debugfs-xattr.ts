// Parses the xattr lines of debugfs 1.47.0's `stat`, `ea_list` and `ea_get`
// ("  name (len) = value"), and `ea_get -x`. ACL values come as ext4 stores
// them: manifest/acl.ts converts them. Tested on captured real output
// (test/fixtures/debugfs/).
import { decodeCString, fromBinary, toBinary } from './debugfs-text.js';

const XATTR_LINE = /^ {2}(.*) \((\d+)\)(?: = (.*))?$/;

/** Decodes a value or name as print_xattr_string() writes it: "quoted", bare (names), or hex bytes. */
function decodeXattrText(text: string, isName: boolean): Buffer | undefined {
  if (/^(?:[0-9a-f]{2} )+$/.test(text)) return Buffer.from(text.replace(/ /g, ''), 'hex');
  if (isName) return decodeCString(text);
  if (text.length >= 2 && text.startsWith('"') && text.endsWith('"')) return decodeCString(text.slice(1, -1));
  return undefined;
}

/** Parses one xattr line of stat/ea_list/ea_get output ("  name (len) = value"). */
export function parseXattrLine(line: string): { name: string; length: number; value: Buffer | null } | undefined {
  // The name may itself contain " (N) = ": try every split, keep the first that decodes to the right length.
  const s = line.startsWith('  ') ? line : `  ${line}`;
  const re = / \((\d+)\)(?: = |$)/g;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const nameText = s.slice(2, m.index);
    const length = Number(m[1]);
    const rest = s.slice(m.index + m[0].length);
    const name = decodeXattrText(nameText, true);
    if (!name || name.length === 0) continue;
    if (!m[0].endsWith(' = ')) {
      if (m.index + m[0].length !== s.length) continue;
      return { name: name.toString('utf8'), length, value: length === 0 ? Buffer.alloc(0) : null };
    }
    const value = decodeXattrText(rest, false);
    if (!value || value.length !== length) continue;
    return { name: name.toString('utf8'), length, value };
  }
  const m = XATTR_LINE.exec(s);
  if (!m) return undefined;
  return { name: fromBinary(m[1]), length: Number(m[2]), value: null };
}

/** Parses `ea_get -x` (or -r -x) output: "name (len) = 01 02 ... \n". */
export function parseEaGetHex(text: string | Buffer): { name: string; value: Buffer } | undefined {
  const s = toBinary(text);
  for (const line of s.split('\n')) {
    if (!/ \(\d+\)/.test(line)) continue;
    const x = parseXattrLine(line);
    if (x && x.value) return { name: x.name, value: x.value };
  }
  return undefined;
}
