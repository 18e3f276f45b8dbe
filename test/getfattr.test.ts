// Pure tests of the getfattr wrapper, on output captured from getfattr 2.5.1:
//   getfattr -R -P -d -m - -e hex --absolute-names /tmp/cap/root
// over a tree with odd names (newline, CR, backslash, a literal "\012", tab,
// leading/trailing spaces, "=", unicode, "# file: " inside a name) and odd
// xattr names ("=", newline, backslash, space), an ACL, a default ACL,
// security.capability and trusted.overlay.opaque.
import { describe, expect, it } from 'vitest';
import { buildGetfattrArgs, parseGetfattrDump, unquoteGetfattr, valueToHex } from '../src/tools/getfattr.js';

const CAPTURED =
  "# file: /tmp/cap/root/sub dir\nsystem.posix_acl_default=0x0200000001000700ffffffff020007000500000004000500ffffffff10000700ffffffff20000500ffffffff\ntrusted.overlay.opaque=0x79\n\n# file: /tmp/cap/root/sub dir/new\\012line\nuser.a=0x31\n\n# file: /tmp/cap/root/ lead\nuser.a=0x36\n\n# file: /tmp/cap/root/tab\tx\nuser.a=0x00ff7f\n\n# file: /tmp/cap/root/eq=x\nuser.empty=0x\n\n# file: /tmp/cap/root/trail \nuser.a=0x37\n\n# file: /tmp/cap/root/cr\\015x\nuser.a=0x32\n\n# file: /tmp/cap/root/lit\\134012eral\nuser.a=0x34\n\n# file: /tmp/cap/root/ünïcödé\nuser.u=0x6e61c3af7665\n\n# file: /tmp/cap/root/plain\nsecurity.capability=0x0100000200200000000000000000000000000000\nsystem.posix_acl_access=0x0200000001000600ffffffff02000400d204000004000400ffffffff10000400ffffffff20000400ffffffff\nuser.bs\\134name=0x33\nuser.eq\\075name=0x31\nuser.nl\\012name=0x32\nuser.sp ace=0x34\n\n# file: /tmp/cap/root/# file: fake\nuser.x=0x39\n\n# file: /tmp/cap/root/back\\134slash\nuser.a=0x33\n\n";

describe('buildGetfattrArgs', () => {
  it('reads every xattr of the tree, never through symlinks, in hex, with absolute names', () => {
    expect(buildGetfattrArgs('/srv/root')).toEqual(['-h', '-R', '-P', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '/srv/root']);
  });
});

describe('unquoteGetfattr', () => {
  it('turns backslash + 3 octal digits into one byte', () => {
    expect(unquoteGetfattr('a\\012b')).toBe('a\nb');
    expect(unquoteGetfattr('back\\134slash')).toBe('back\\slash');
    expect(unquoteGetfattr('lit\\134012eral')).toBe('lit\\012eral');
    expect(unquoteGetfattr('eq\\075x')).toBe('eq=x');
    expect(unquoteGetfattr('ünï plain')).toBe('ünï plain');
  });
  it('rebuilds multi-byte UTF-8 from escaped bytes', () => {
    expect(unquoteGetfattr('\\303\\274')).toBe('ü');
  });
});

describe('valueToHex', () => {
  it('reads hex, base64 and text values as lowercase hex', () => {
    expect(valueToHex('0x00FF')).toBe('00ff');
    expect(valueToHex('0x')).toBe('');
    expect(valueToHex('0sAP8=')).toBe('00ff');
    expect(valueToHex('"hi"')).toBe('6869');
  });
  it('refuses a malformed value', () => {
    expect(() => valueToHex('0xabc')).toThrow(/malformed/);
    expect(() => valueToHex('zz')).toThrow(/unknown encoding/);
  });
});

describe('parseGetfattrDump on captured output', () => {
  const dump = parseGetfattrDump(CAPTURED);
  const r = '/tmp/cap/root';

  it('finds every file block, with odd names unquoted', () => {
    expect([...dump.keys()].sort()).toEqual(
      [
        `${r}/sub dir`,
        `${r}/sub dir/new\nline`,
        `${r}/ lead`,
        `${r}/tab\tx`,
        `${r}/eq=x`,
        `${r}/trail `,
        `${r}/cr\rx`,
        `${r}/lit\\012eral`,
        `${r}/ünïcödé`,
        `${r}/plain`,
        `${r}/# file: fake`,
        `${r}/back\\slash`,
      ].sort(),
    );
  });

  it('keeps raw values as lowercase hex, empty values as ""', () => {
    expect(dump.get(`${r}/tab\tx`)).toEqual({ 'user.a': '00ff7f' });
    expect(dump.get(`${r}/eq=x`)).toEqual({ 'user.empty': '' });
    expect(dump.get(`${r}/ünïcödé`)).toEqual({ 'user.u': Buffer.from('naïve').toString('hex') });
    expect(dump.get(`${r}/# file: fake`)).toEqual({ 'user.x': '39' });
  });

  it('unquotes xattr names and keeps capabilities and ACLs verbatim', () => {
    expect(dump.get(`${r}/plain`)).toEqual({
      'security.capability': '0100000200200000000000000000000000000000',
      'system.posix_acl_access': '0200000001000600ffffffff02000400d204000004000400ffffffff10000400ffffffff20000400ffffffff',
      'user.bs\\name': '33',
      'user.eq=name': '31',
      'user.nl\nname': '32',
      'user.sp ace': '34',
    });
    expect(dump.get(`${r}/sub dir`)).toEqual({
      'system.posix_acl_default': '0200000001000700ffffffff020007000500000004000500ffffffff10000700ffffffff20000500ffffffff',
      'trusted.overlay.opaque': '79',
    });
  });

  it('reads an empty dump as no xattrs, and an empty value printed without "="', () => {
    expect(parseGetfattrDump('').size).toBe(0);
    expect(parseGetfattrDump('# file: /a\nuser.e\n\n').get('/a')).toEqual({ 'user.e': '' });
  });

  it('refuses a line outside a file block', () => {
    expect(() => parseGetfattrDump('user.a=0x31\n')).toThrow(/outside/);
  });
});
