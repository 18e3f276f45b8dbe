// A raw tar writer for archives no tool would write: out-of-range numbers,
// base-256 fields, hostile pax records, duplicate members, GNU sparse bombs.

export interface RawMember {
  name: string;
  /** typeflag: 0 file, 1 hardlink, 2 symlink, 3 char, 4 block, 5 dir, 6 fifo. */
  type?: string;
  data?: Buffer | string;
  /** The header's size field when it must differ from the data (sparse 1.0: map + data). */
  size?: number;
  linkname?: string;
  mode?: number;
  uid?: number | bigint;
  gid?: number | bigint;
  mtime?: number | bigint;
  devmajor?: number;
  devminor?: number;
  /** An 'x' extended header before the member, values as raw bytes. */
  pax?: [string, Buffer | string][];
}

/** Octal when it fits the field, else GNU base-256 (0x80 positive, 0xff two's complement negative). */
function numeric(b: Buffer, off: number, len: number, n: number | bigint): void {
  const v = BigInt(n);
  if (v >= 0n && v < 8n ** BigInt(len - 1)) {
    b.write(v.toString(8).padStart(len - 1, '0') + '\0', off, len, 'latin1');
    return;
  }
  let x = v < 0n ? (1n << BigInt(8 * (len - 1))) + v : v;
  for (let i = len - 1; i > 0; i--) {
    b[off + i] = Number(x & 0xffn);
    x >>= 8n;
  }
  b[off] = v < 0n ? 0xff : 0x80;
}

export function tarHeader(name: string, type: string, size: number, m: Partial<RawMember> = {}): Buffer {
  const b = Buffer.alloc(512);
  Buffer.from(name, 'utf8').copy(b, 0, 0, 100);
  numeric(b, 100, 8, m.mode ?? (type === '5' ? 0o755 : 0o644));
  numeric(b, 108, 8, m.uid ?? 0);
  numeric(b, 116, 8, m.gid ?? 0);
  numeric(b, 124, 12, size);
  numeric(b, 136, 12, m.mtime ?? 1_700_000_000);
  b.write(type, 156, 1, 'latin1');
  Buffer.from(m.linkname ?? '', 'utf8').copy(b, 157, 0, 100);
  b.write('ustar\0', 257, 'latin1');
  b.write('00', 263, 'latin1');
  numeric(b, 329, 8, m.devmajor ?? 0);
  numeric(b, 337, 8, m.devminor ?? 0);
  fixChecksum(b, 0);
  return b;
}

export function fixChecksum(tar: Buffer, offset: number): void {
  const b = tar.subarray(offset, offset + 512);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
}

export function paxData(records: [string, Buffer | string][]): Buffer {
  return Buffer.concat(records.map(([k, v]) => {
    const body = Buffer.concat([Buffer.from(` ${k}=`, 'utf8'), Buffer.isBuffer(v) ? v : Buffer.from(v, 'utf8'), Buffer.from('\n')]);
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    return Buffer.concat([Buffer.from(String(len)), body]);
  }));
}

export function padded(data: Buffer): Buffer {
  return Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

export function rawTar(members: RawMember[], opts: { end?: boolean } = {}): Buffer {
  const parts: Buffer[] = [tarHeader('./', '5', 0)];
  for (const m of members) {
    if (m.pax) {
      const d = paxData(m.pax);
      parts.push(tarHeader('PaxHeader/x', 'x', d.length), padded(d));
    }
    const data = Buffer.from(m.data ?? '');
    parts.push(tarHeader(m.name, m.type ?? '0', m.size ?? data.length, m), padded(data));
  }
  if (opts.end !== false) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/**
 * A GNU sparse 1.0 member (pax format 1.0, as GNU tar --sparse writes it):
 * `realSize` bytes, all a hole but for `tail` at the end.
 */
export function sparseMember(name: string, realSize: number, tail = 'end'): RawMember {
  const map = padded(Buffer.from(`1\n${realSize - tail.length}\n${tail.length}\n`));
  const data = Buffer.concat([map, Buffer.from(tail)]);
  return {
    name: `GNUSparseFile.0/${name}`,
    data,
    pax: [['GNU.sparse.major', '1'], ['GNU.sparse.minor', '0'], ['GNU.sparse.name', name], ['GNU.sparse.realsize', String(realSize)]],
  };
}
