// vis(3) encoding of names for mtree(5) specifications (see mtree.ts for
// which escapes and why).

const NEEDS_ESCAPE = new Set([...' \\#*?[='].map((c) => c.charCodeAt(0)));

/** vis(3) with VIS_WHITE|VIS_OCTAL|VIS_GLOB, byte-wise on the UTF-8 bytes (as go-mtree's govis). */
export function visEncode(s: string | Buffer): string {
  const bytes = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  let out = '';
  for (const b of bytes) {
    if (b > 0x20 && b < 0x7f && !NEEDS_ESCAPE.has(b)) out += String.fromCharCode(b);
    else out += `\\${b.toString(8).padStart(3, '0')}`;
  }
  return out;
}

/** strunvis for the escapes visEncode writes (and the C-style ones NetBSD mtree -c writes). */
export function visDecode(s: string): Buffer {
  const out: number[] = [];
  const cstyle: Record<string, number> = { s: 0x20, t: 0x09, n: 0x0a, r: 0x0d, b: 0x08, a: 0x07, v: 0x0b, f: 0x0c, '\\': 0x5c, '#': 0x23 };
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c !== '\\') {
      out.push(...Buffer.from(c, 'utf8'));
      continue;
    }
    const oct = /^[0-7]{3}/.exec(s.slice(i + 1));
    if (oct) {
      out.push(parseInt(oct[0], 8));
      i += 3;
    } else if (s[i + 1] in cstyle) {
      out.push(cstyle[s[i + 1]]);
      i += 1;
    } else throw new Error(`unsupported vis escape at ${i} in ${s}`);
  }
  return Buffer.from(out);
}
