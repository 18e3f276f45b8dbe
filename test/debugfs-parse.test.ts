// Pure tests of the debugfs parsers, on output captured from debugfs 1.47.0
// (test/fixtures/debugfs/make-fixtures.sh rebuilds it): `ls -p` and `stat`
// of an ext4 image made with `mke2fs -d` over a tree with odd names, xattrs
// printed every way (string, hex, empty, escaped, too long to print, a hex
// name), ACLs, devices old- and new-style, symlinks fast, slow and with a
// newline in the target, a sparse file, an extent tree with an index block,
// unwritten extents (fallocate through a mount); plus the same tree as ext3
// (block-mapped) and with inline_data.
import { parseDumpe2fsHeader } from '../src/tools/dumpe2fs.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { aclDiskToXattr, aclFromXattr, ext4AclBytes } from '../src/manifest/acl.js';
import { checkDebugfsCommand, encodeDebugfsValue, quoteDebugfsArg, splitDebugfsOutput } from '../src/tools/debugfs.js';
import { decodeCString } from '../src/tools/debugfs-text.js';
import { parseLsP, parseLsPSections } from '../src/tools/debugfs-ls.js';
import { parseBlockList, parseStat, parseStatSections, type InodeStat } from '../src/tools/debugfs-stat.js';
import { parseEaGetHex, parseXattrLine } from '../src/tools/debugfs-xattr.js';

const dir = join(import.meta.dirname, 'fixtures/debugfs');
const fixture = (name: string): Buffer => readFileSync(join(dir, name));

/** getfattr -e hex of the source tree: path -> name -> hex. */
function getfattrFixture(): Map<string, Record<string, string>> {
  const out = new Map<string, Record<string, string>>();
  let cur: Record<string, string> = {};
  for (const line of fixture('getfattr.txt').toString('utf8').split('\n')) {
    const file = /^# file: (.*)$/.exec(line);
    if (file) out.set(file[1], (cur = {}));
    const kv = /^([^=]+)=0x([0-9a-f]*)$/.exec(line);
    if (kv) cur[kv[1]] = kv[2];
  }
  return out;
}
const getfattr = getfattrFixture();

/** Inode numbers by name, from the root listing. */
const rootListing = parseLsPSections(fixture('ls-p.out'))[0];
const ino = (name: string): number => {
  const e = rootListing.entries.find((x) => x.name === name);
  if (!e) throw new Error(`no ${name} in the fixture listing`);
  return e.inode;
};

const stats = new Map<number, InodeStat>();
for (const s of parseStatSections(fixture('stat.out'))) if (s.stat) stats.set(s.stat.inode, s.stat);
const statOf = (name: string): InodeStat => stats.get(ino(name))!;
const hexOf = (b: Buffer | null | undefined): string | undefined => b?.toString('hex');

describe('parseLsP', () => {
  it('gives a section to each prompt, in order', () => {
    const sections = parseLsPSections(fixture('ls-p.out'));
    // ls -p <2>, <dir with space>, <acl-dir>, <dev>: each listing holds . and .. of its own folder, left out.
    expect(sections).toHaveLength(4);
    expect(sections.every((s) => s.errors.length === 0)).toBe(true);
    expect(sections[0]).toEqual(rootListing);
    expect(sections[1].entries.map((e) => e.name)).toEqual(['inner file']);
    expect(sections[2].entries).toEqual([]);
    expect(sections[3].entries.map((e) => e.name).sort()).toEqual(['big', 'null']);
  });

  it('reads names with spaces, tabs, quotes, backslashes, unicode and newlines, and leaves out . and ..', () => {
    const names = rootListing.entries.map((e) => e.name);
    expect(names).not.toContain('.');
    expect(names).not.toContain('..');
    for (const n of ['dir with space', 'tab\tname', 'q"uote', 'back\\slash', 'ünïcödé', 'new\nline', 'lost+found']) expect(names).toContain(n);
    expect(names).toHaveLength(21);
  });

  it('reads modes, sizes, unsigned owners; directories have no size', () => {
    const plain = rootListing.entries.find((e) => e.name === 'plain')!;
    expect(plain).toEqual({ inode: plain.inode, mode: 0o100664, uid: 100000, gid: 4000000000, name: 'plain', size: 6 });
    expect(rootListing.entries.find((e) => e.name === 'hardlink')!.inode).toBe(plain.inode);
    const dev = rootListing.entries.find((e) => e.name === 'dev')!;
    expect(dev.mode).toBe(0o040755);
    expect(dev.size).toBeUndefined();
    expect(rootListing.entries.find((e) => e.name === 'suid')!.mode).toBe(0o104755);
    expect(rootListing.entries.find((e) => e.name === 'fifo')!.mode).toBe(0o010644);
  });

  it('is not fooled by a name that holds a newline and a prompt', () => {
    // A name can't hold "/", so it can't forge a record; it can hold a prompt, even one followed by a record's start.
    const text = 'debugfs:  /2/040755/0/0/.//\n/2/040755/0/0/..//\n/12/100644/0/0/x\ndebugfs:  \ndebugfs:  y/1/\n/14/100644/0/0/ok/3/\ndebugfs:  /15/100644/0/0/real/1/\n';
    const sections = parseLsPSections(text);
    expect(sections).toHaveLength(2);
    expect(sections[0].entries.map((e) => e.name)).toEqual(['x\ndebugfs:  \ndebugfs:  y', 'ok']);
    expect(sections[1].entries.map((e) => e.name)).toEqual(['real']);
    expect(parseLsP('/15/100644/0/0/real/1/\n').map((e) => e.inode)).toEqual([15]);
  });

  it('keeps error lines apart, and gives a command that printed nothing its empty section', () => {
    const s = parseLsPSections('debugfs:  <30>: Ext2 inode is not a directory \ndebugfs:  debugfs:  /15/100644/0/0/real/1/\n');
    expect(s).toHaveLength(3);
    expect(s[0].entries).toEqual([]);
    expect(s[0].errors).toEqual(['<30>: Ext2 inode is not a directory ']);
    expect(s[1]).toEqual({ entries: [], errors: [] });
    expect(s[2].entries.map((e) => e.name)).toEqual(['real']);
  });
});

describe('parseStat', () => {
  it('reads type, mode with setuid, owners (unsigned 32-bit), size and links', () => {
    const plain = statOf('plain');
    expect(plain).toMatchObject({ type: 'regular', mode: 0o100664, uid: 100000, gid: 4000000000, size: 6, links: 2, blockMap: 'extents' });
    expect(statOf('suid')).toMatchObject({ mode: 0o104755, uid: 0, gid: 0, size: 5, links: 1 });
    expect(stats.get(2)).toMatchObject({ type: 'directory', mode: 0o040755 });
  });

  it('decodes xattrs printed as strings, hex, empty and escaped strings to the bytes getfattr shows', () => {
    const x = statOf('plain').xattrs;
    const want = getfattr.get('/plain')!;
    expect(hexOf(x.get('user.text'))).toBe(want['user.text']);
    expect(hexOf(x.get('user.bin'))).toBe(want['user.bin']);
    expect(hexOf(x.get('user.empty'))).toBe('');
    expect(hexOf(x.get('user.escaped'))).toBe(want['user.escaped']);
    expect(hexOf(x.get('user.we"ird name'))).toBe(want['user.we"ird name']);
  });

  it('gives the inodes without xattrs one empty Map, which refuses a value', () => {
    expect(statOf('fifo').xattrs.size).toBe(0);
    expect(statOf('fifo').xattrs).toBe(statOf('short-link').xattrs);
    expect(() => statOf('fifo').xattrs.set('user.x', null)).toThrow(/no xattrs/);
    expect(statOf('plain').xattrs).not.toBe(statOf('suid').xattrs);
  });

  it('leaves values of 40 bytes and more unread (stat prints only their length)', () => {
    const p = statOf('plain');
    expect(p.xattrs.get('user.long')).toBeNull();
    expect(p.xattrLengths.get('user.long')).toBe(48);
  });

  it('decodes a name and a value printed as hex bytes', () => {
    const x = statOf('suid').xattrs;
    const want = getfattr.get('/suid')!;
    expect(hexOf(x.get('security.capability'))).toBe(want['security.capability']);
    expect(hexOf(x.get('user.日本語'))).toBe(want['user.日本語']);
  });

  it('shows ACLs in the ext4 disk format; aclDiskToXattr gives what getfattr shows', () => {
    const access = statOf('plain').xattrs.get('system.posix_acl_access')!;
    expect(access.readUInt32LE(0)).toBe(1);
    expect(aclDiskToXattr(access).toString('hex')).toBe(getfattr.get('/plain')!['system.posix_acl_access']);
    const dflt = statOf('acl-dir').xattrs.get('system.posix_acl_default')!;
    expect(aclDiskToXattr(dflt).toString('hex')).toBe(getfattr.get('/acl-dir')!['system.posix_acl_default']);
    // Already in the Linux format: unchanged.
    const linux = Buffer.from(getfattr.get('/plain')!['system.posix_acl_access'], 'hex');
    expect(aclDiskToXattr(linux)).toEqual(linux);
    expect(() => aclDiskToXattr(Buffer.from('03000000', 'hex'))).toThrow(/neither/);
    // ext4AclBytes, which sizes xattrs for the tree limits, counts the bytes ext4 really stored.
    expect(ext4AclBytes(aclFromXattr(aclDiskToXattr(access)))).toBe(access.length);
    expect(ext4AclBytes(aclFromXattr(aclDiskToXattr(dflt)))).toBe(dflt.length);
  });

  it('reads fast symlink targets by their size, even with a quote and a newline inside', () => {
    expect(statOf('short-link').fastLink).toBe('plain');
    expect(statOf('odd-link')).toMatchObject({ type: 'symlink', size: 5, fastLink: 'a"b\nc' });
    // The next inode's output is still read.
    expect(statOf('fifo')).toMatchObject({ type: 'FIFO', mode: 0o010644, blockMap: 'blocks', extents: [] });
  });

  it('finds no error in any inode of the fixture (an empty block list is followed by an empty line)', () => {
    const sections = parseStatSections(fixture('stat.out'));
    expect(sections).toHaveLength(15);
    for (const s of sections) expect(s.errors, `inode ${s.stat?.inode}`).toEqual([]);
  });

  it('gives a slow symlink its block, and no fast target', () => {
    const l = statOf('long-link');
    expect(l.fastLink).toBeUndefined();
    expect(l.size).toBe(100);
    expect(l.extents).toHaveLength(1);
    expect(l.extents![0]).toMatchObject({ logical: 0, length: 1, uninit: false });
  });

  it('reads old-style and new-style device numbers', () => {
    const dev = parseLsPSections(fixture('ls-p.out'))[3].entries;
    const null_ = stats.get(dev.find((e) => e.name === 'null')!.inode)!;
    const big = stats.get(dev.find((e) => e.name === 'big')!.inode)!;
    expect(null_).toMatchObject({ type: 'character special', mode: 0o020644, rdev: { major: 1, minor: 3 } });
    expect(big).toMatchObject({ type: 'block special', mode: 0o060644, rdev: { major: 259, minor: 70000 } });
  });

  it('reads extent maps: holes, index blocks left out, unwritten extents', () => {
    expect(statOf('sparse')).toMatchObject({ size: 1048580, extents: [{ logical: 1024, length: 1, uninit: false }] });
    const frag = statOf('fragmented').extents!;
    expect(frag.map((e) => [e.logical, e.length])).toEqual([[0, 4], [8, 4], [16, 4], [24, 4], [32, 1], [33, 3], [40, 4], [48, 4], [56, 4], [64, 4], [72, 4]]);
    const pre = statOf('prealloc');
    expect(pre.size).toBe(40960);
    expect(pre.extents!.map((e) => [e.logical, e.length, e.uninit])).toEqual([[0, 8, true], [8, 1, false], [9, 31, true]]);
    expect(statOf('past').extents).toEqual([]);
  });

  it('reads mtime seconds from the hex form, signed, with the epoch bits', () => {
    expect(statOf('past').mtime).toBe(Date.UTC(1960, 0, 1) / 1000);
    // mke2fs 1.47.0 -d stores 2040-01-01 without the epoch bits: the image (and the kernel) says 1903.
    expect(statOf('future').mtime).toBe(2208988800 - 2 ** 32);
    expect(parseStat('Inode: 5   Type: regular    Mode:  0644   Flags: 0x0\n mtime: 0x83aa7e80:00000001 -- x\n').mtime).toBe(2208988800);
    expect(parseStat('Inode: 5   Type: regular    Mode:  0644   Flags: 0x0\nmtime: 0x65a1b2c3 -- x\n').mtime).toBe(0x65a1b2c3);
  });

  it('reads block-mapped (ext3) lists, leaving out IND/DIND blocks', () => {
    // stat "/plain", "/sparse", "/fragmented", "/long-link", "/acl-dir".
    const s = parseStatSections(fixture('stat-ext3.out'));
    expect(s).toHaveLength(5);
    expect(s[0].stat).toMatchObject({ blockMap: 'blocks', extents: [{ logical: 0, length: 1 }] });
    expect(s[1].stat!.extents).toEqual([{ logical: 1024, physical: s[1].stat!.extents![0].physical, length: 1, uninit: false }]);
    const frag = s[2].stat!.extents!;
    expect(frag.reduce((n, e) => n + e.length, 0)).toBe(40);
    expect(frag.map((e) => e.logical)).toEqual([0, 8, 16, 24, 32, 40, 48, 56, 64, 72]);
    expect(aclDiskToXattr(s[4].stat!.xattrs.get('system.posix_acl_default')!).toString('hex')).toBe(getfattr.get('/acl-dir')!['system.posix_acl_default']);
  });

  it('reads inline data: size of the area, the system.data xattr, inline symlink targets', () => {
    const s = parseStatSections(fixture('stat-inline.out'));
    const plain = s[0].stat!;
    expect(plain.flags & 0x10000000).toBe(0x10000000);
    expect(plain.inlineDataSize).toBe(60);
    expect(plain.extents).toBeUndefined();
    expect(plain.xattrs.get('system.data')).toEqual(Buffer.alloc(0));
    expect(s[1].stat!.fastLink).toBe('/long'.repeat(20));
    expect(s[1].stat!.xattrLengths.get('system.data')).toBe(40);
    expect(s[2].stat).toMatchObject({ type: 'directory', inlineDataSize: 60 });
    expect(s[3].stat!.extents!.map((e) => e.logical)).toEqual([0, 1024]);
  });

  it('reports errors per command; a command that printed nothing has an empty section', () => {
    // stat <plain>, stat <99999999>, stat <0>.
    const s = parseStatSections(fixture('stat-errors.out'));
    expect(s).toHaveLength(3);
    expect(s[0].stat!.inode).toBe(ino('plain'));
    expect(s[0].errors).toEqual([]);
    expect(s[1].stat).toBeUndefined();
    expect(s[1].errors).toEqual(['<99999999>: File not found by ext2_lookup ']);
    expect(s[2].stat).toBeUndefined();
    expect(s[2].errors).toEqual([]);
    expect(() => parseStat('<5>: File not found\n')).toThrow(/not a debugfs stat output/);
  });

  it('a fast symlink target shorter than the size, or an error inside the block list, is an error of its section', () => {
    const head = (ino: number, type: string, mode: string, size: number) =>
      `debugfs:  Inode: ${ino}   Type: ${type}    Mode:  ${mode}   Flags: 0x0\nUser:     0   Group:     0   Project:     0   Size: ${size}\nLinks: 1   Blockcount: 0\n`;
    // debugfs prints the target up to its first NUL: 2 bytes of a size of 4.
    const short = `${head(12, 'symlink', '0777', 4)}Fast link dest: "ab"\n${head(13, 'regular', '0644', 0)}`;
    const s = parseStatSections(short);
    expect(s[0].errors).toEqual([`the fast symlink target is not as long as the inode's size (4)`]);
    const broken = `${head(14, 'regular', '0644', 8192)}EXTENTS:\n(0):100, (1-stat: Corrupt extent header while reading\n`;
    expect(parseStatSections(broken)[0].errors[0]).toMatch(/^unparsable block range "\(1-stat: Corrupt extent header/);
  });
});

describe('parseXattrLine / decodeCString / parseBlockList', () => {
  it('decodes every escape print_c_string writes', () => {
    expect(decodeCString('a\\tb\\n\\\\\\"\\\'\\000\\377\\a\\b\\f\\v').toString('latin1')).toBe('a\tb\n\\"\'\0\xff\x07\b\f\v');
    expect(decodeCString('\\x41\\x4').toString()).toBe('A\x04');
  });

  it('finds the real split when a name holds " (N) = "', () => {
    expect(parseXattrLine('  user.a (1) = b (3) = "xyz"')).toEqual({ name: 'user.a (1) = b', length: 3, value: Buffer.from('xyz') });
    expect(parseXattrLine('  user.e (0)')).toEqual({ name: 'user.e', length: 0, value: Buffer.alloc(0) });
    expect(parseXattrLine('  user.l (44)')).toEqual({ name: 'user.l', length: 44, value: null });
  });

  it('parses ranges and refuses garbage', () => {
    expect(parseBlockList('(0-2):3754-3756, (3[u]):99, (ETB0):12, (5-6[u]):100-101')).toEqual([
      { logical: 0, physical: 3754, length: 3, uninit: false },
      { logical: 3, physical: 99, length: 1, uninit: true },
      { logical: 5, physical: 100, length: 2, uninit: true },
    ]);
    expect(() => parseBlockList('(0-2):3754')).toThrow();
    expect(() => parseBlockList('junk')).toThrow();
  });
});

describe('parseEaGetHex / superblock listing / splitDebugfsOutput', () => {
  const cmds = [
    `ea_get -r -x <${ino('plain')}> user.long`,
    `ea_get -r -x <${ino('plain')}> system.posix_acl_access`,
    `ea_get -x <${ino('plain')}> system.posix_acl_access`,
  ];
  const sections = splitDebugfsOutput(fixture('ea_get.out'), cmds);

  it('reads long values with ea_get -r -x', () => {
    expect(sections.map((s) => s.command)).toEqual(cmds);
    expect(parseEaGetHex(sections[0].output)!.value.toString('hex')).toBe(getfattr.get('/plain')!['user.long']);
    const raw = parseEaGetHex(sections[1].output)!.value;
    expect(aclDiskToXattr(raw).toString('hex')).toBe(getfattr.get('/plain')!['system.posix_acl_access']);
  });

  it('documents that ea_get without -r converts ACLs with id 0 where the kernel has 0xffffffff', () => {
    const converted = parseEaGetHex(sections[2].output)!.value.toString('hex');
    expect(converted).not.toBe(getfattr.get('/plain')!['system.posix_acl_access']);
    expect(converted).toBe(getfattr.get('/plain')!['system.posix_acl_access'].replace(/ffffffff/g, '00000000'));
  });

  it('reads block size and features from stats -h with the one superblock parser (tools/dumpe2fs.ts)', () => {
    const sb = parseDumpe2fsHeader(fixture('stats-h.out').toString('utf8'));
    expect(sb.blockSize).toBe(1024);
    expect(sb.features).toContain('extent');
    expect(sb.inodeCount).toBeGreaterThan(0);
    expect(() => parseDumpe2fsHeader('nothing')).toThrow(/Block size/);
  });

  it('gives an empty section to a command that left no echo line', () => {
    const s = splitDebugfsOutput('debugfs: a\nx\ndebugfs: b\n', ['a', 'b', 'c']);
    expect(s).toEqual([{ command: 'a', output: 'x\n' }, { command: 'b', output: '' }, { command: 'c', output: '' }]);
  });
});

describe('writing debugfs arguments', () => {
  it('quotes only what libss would split, doubling quotes, leaving backslashes', () => {
    expect(quoteDebugfsArg('/usr/bin/ping')).toBe('/usr/bin/ping');
    expect(quoteDebugfsArg('/back\\slash')).toBe('/back\\slash');
    expect(quoteDebugfsArg('/ünï')).toBe('/ünï');
    expect(quoteDebugfsArg('/sp ace')).toBe('"/sp ace"');
    expect(quoteDebugfsArg('/tab\tx')).toBe('"/tab\tx"');
    expect(quoteDebugfsArg('/q"uote')).toBe('"/q""uote"');
    expect(quoteDebugfsArg('')).toBe('""');
    expect(() => quoteDebugfsArg('/new\nline')).toThrow(/newline/);
    expect(() => quoteDebugfsArg('/cr\rx')).toThrow();
  });

  it('encodes ea_set values byte by byte', () => {
    expect(encodeDebugfsValue(Buffer.from([0, 0xff, 0x10]))).toBe('\\x00\\xff\\x10');
    expect(encodeDebugfsValue(Buffer.from('-r'))).toBe('\\x2d\\x72');
    expect(encodeDebugfsValue(Buffer.alloc(0))).toBe('""');
    // parse_c_string() gives the bytes back.
    const bytes = Buffer.from([0, 1, 0x22, 0x5c, 0x20, 0x7f, 0x80, 0xff]);
    expect(decodeCString(encodeDebugfsValue(bytes))).toEqual(bytes);
  });

  it('refuses script lines debugfs would not run as written', () => {
    expect(() => checkDebugfsCommand('stat <2>')).not.toThrow();
    expect(() => checkDebugfsCommand('stat <2>\nrm /x')).toThrow();
    expect(() => checkDebugfsCommand('# comment')).toThrow();
    expect(() => checkDebugfsCommand('  !sh')).toThrow();
    expect(() => checkDebugfsCommand(`ea_set / user.x ${'a'.repeat(8190)}`)).toThrow(/longer/);
  });
});
