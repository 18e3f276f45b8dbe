// How debugfs 1.47.0 writes bytes, for the parsers of its output: the
// output is handled as a latin1 "binary" string so that every byte survives
// (names and values are not valid UTF-8 in general), and names and xattr
// values are printed as C strings (print_c_string()).

/** What debugfs's command loop prints before it reads each line (two spaces, no newline; tools/debugfs.ts). */
export const DEBUGFS_PROMPT = 'debugfs:  ';

export function toBinary(text: string | Buffer): string {
  return typeof text === 'string' ? Buffer.from(text, 'utf8').toString('latin1') : text.toString('latin1');
}

/**
 * The bytes of a binary string as UTF-8. Always through a Buffer, ASCII
 * too: it makes a string of its own, where a slice of the batch's output
 * (V8 keeps a reference to the whole) held every listing and stat batch in
 * memory for as long as a name or target from it lived (the 100k-entry tar's
 * build peaked at 310 MB with that, 244 MB without).
 */
export function fromBinary(s: string): string {
  return Buffer.from(s, 'latin1').toString('utf8');
}

/** Decodes a C string as debugfs's print_c_string() writes it (binary string in, raw bytes out). */
export function decodeCString(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c !== 0x5c) {
      out.push(c & 0xff);
      continue;
    }
    const n = s[++i];
    switch (n) {
      case 'a': out.push(7); break;
      case 'b': out.push(8); break;
      case 'f': out.push(12); break;
      case 'n': out.push(10); break;
      case 't': out.push(9); break;
      case 'v': out.push(11); break;
      case 'x': {
        const m = /^[0-9a-fA-F]{1,2}/.exec(s.slice(i + 1, i + 3));
        if (!m) {
          out.push(0x78);
          break;
        }
        out.push(parseInt(m[0], 16));
        i += m[0].length;
        break;
      }
      default: {
        const m = /^[0-7]{1,3}/.exec(s.slice(i, i + 3));
        if (m) {
          out.push(parseInt(m[0], 8) & 0xff);
          i += m[0].length - 1;
        } else if (n !== undefined) {
          out.push(n.charCodeAt(0) & 0xff);
        }
      }
    }
  }
  return Buffer.from(out);
}
