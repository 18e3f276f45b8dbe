import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import {
  ACL_TAG, ACL_UNDEFINED_ID, AclError, aclFromXattr, aclTextToXattrHex, aclToText, aclToXattr, aclXattrName, isAclXattr, isMinimalAcl, parseAclText,
} from '../src/manifest/acl.js';

const U = ACL_UNDEFINED_ID;

describe('which xattrs hold an ACL', () => {
  it('exactly the two names the kernel uses, and the names aclXattrName gives', () => {
    expect(isAclXattr(aclXattrName('access'))).toBe(true);
    expect(isAclXattr(aclXattrName('default'))).toBe(true);
    for (const name of ['system.posix_acl_other', 'system.posix_acl_', 'user.posix_acl_access', 'security.capability']) expect(isAclXattr(name), name).toBe(false);
  });
});

describe('parseAclText / aclToXattr (pure)', () => {
  it('parses the GNU tar / getfacl form and sorts by tag, then id', () => {
    const text = 'user::rw-\nuser:1234:r--\nuser:2:rw-\ngroup::r--\ngroup:4:r-x\nmask::rwx\nother::r--\n';
    expect(parseAclText(text)).toEqual([
      { tag: ACL_TAG.USER_OBJ, perm: 6, id: U },
      { tag: ACL_TAG.USER, perm: 6, id: 2 },
      { tag: ACL_TAG.USER, perm: 4, id: 1234 },
      { tag: ACL_TAG.GROUP_OBJ, perm: 4, id: U },
      { tag: ACL_TAG.GROUP, perm: 5, id: 4 },
      { tag: ACL_TAG.MASK, perm: 7, id: U },
      { tag: ACL_TAG.OTHER, perm: 4, id: U },
    ]);
  });

  it('encodes the kernel layout: le32 version 2, then le16 tag, le16 perm, le32 id', () => {
    const hex = aclToXattr(parseAclText('user::rw-,user:1234:r--,group::r--,mask::r--,other::r--')).toString('hex');
    expect(hex).toBe(
      '02000000' + '01000600ffffffff' + '02000400d2040000' + '04000400ffffffff' + '10000400ffffffff' + '20000400ffffffff',
    );
  });

  it('takes the numeric id of the star/bsdtar form over the name', () => {
    const bsd = 'user::rw-,group::r--,other::r--,user:bin:rw-:2,user:1234:r--,group:adm:r-x:4,mask::rwx';
    const gnu = 'user::rw-\nuser:2:rw-\nuser:1234:r--\ngroup::r--\ngroup:4:r-x\nmask::rwx\nother::r--';
    expect(aclToXattr(parseAclText(bsd))).toEqual(aclToXattr(parseAclText(gnu)));
  });

  it('resolves names without ids through the resolver, and refuses unknown names', () => {
    const resolve = (kind: 'user' | 'group', name: string) => (kind === 'user' && name === 'bob' ? 1001 : kind === 'group' && name === 'staff' ? 50 : undefined);
    const e = parseAclText('user::rwx\nuser:bob:r-x\ngroup::r-x\ngroup:staff:r--\nmask::r-x\nother::---', resolve);
    expect(e.find((x) => x.tag === ACL_TAG.USER)?.id).toBe(1001);
    expect(e.find((x) => x.tag === ACL_TAG.GROUP)?.id).toBe(50);
    expect(() => parseAclText('user::rwx,user:alice:r--,group::r--,mask::r--,other::---', resolve)).toThrow(/alice.*without a numeric id/);
    expect(() => parseAclText('user::rwx,user:alice:r--,group::r--,mask::r--,other::---')).toThrow(AclError);
  });

  it('accepts short tags, a default: prefix, comments and effective remarks', () => {
    const a = parseAclText('d:u::rwx, d:u:7:r-x\t#effective:r--\nd:g::r-x\nd:m::r--\nd:o::---\n# comment');
    expect(aclToText(a)).toBe('user::rwx,user:7:r-x,group::r-x,mask::r--,other::---');
    expect(aclToText(parseAclText('user::rw-,group::r--,other:r--,mask:r--'))).toBe('user::rw-,group::r--,mask::r--,other::r--');
  });

  it('computes the mask like setfacl when named entries come without one', () => {
    const a = parseAclText('user::rw-,user:5:r--,group::--x,group:6:-w-,other::---');
    expect(a.find((x) => x.tag === ACL_TAG.MASK)).toEqual({ tag: ACL_TAG.MASK, perm: 7, id: U });
  });

  it('refuses malformed ACLs', () => {
    expect(() => parseAclText('user::rw-,group::r--')).toThrow(/other::/);
    expect(() => parseAclText('user::rw-,user::r--,group::r--,other::r--')).toThrow(/duplicate/);
    expect(() => parseAclText('user::rwz,group::r--,other::r--')).toThrow(/bad permission/);
    expect(() => parseAclText('bogus::rw-,group::r--,other::r--')).toThrow(/unknown tag/);
    expect(() => parseAclText('user::rw-,user:x:r--:-1,group::r--,other::r--')).toThrow(/bad numeric id/);
    expect(() => parseAclText('user::rw-,group::r--,other:5:r--')).toThrow(/must not name/);
    expect(() => aclFromXattr(Buffer.from('0100000001000600ffffffff', 'hex'))).toThrow(/version/);
    expect(() => aclFromXattr(Buffer.from('02000000010006', 'hex'))).toThrow(/length/);
  });

  it('keeps no access xattr for an ACL the mode bits already say, but does keep a minimal default ACL', () => {
    expect(isMinimalAcl(parseAclText('user::rw-,group::r--,other::r--'))).toBe(true);
    expect(aclTextToXattrHex('user::rw-\ngroup::r--\nother::r--\n', 'access')).toBeUndefined();
    expect(aclTextToXattrHex('user::rw-,group::r--,mask::r--,other::r--', 'access')).toBeUndefined();
    expect(aclTextToXattrHex('', 'default')).toBeUndefined();
    expect(aclTextToXattrHex('user::rwx,group::r-x,other::r-x', 'default')).toBe('0200000001000700ffffffff04000500ffffffff20000500ffffffff');
  });

  it('round-trips through the binary form', () => {
    const a = parseAclText('user::rwx,user:0:r--,user:4294967294:---,group::r-x,group:100:rw-,mask::rwx,other::r--');
    expect(aclFromXattr(aclToXattr(a))).toEqual(a);
  });
});

describe('against the kernel (setfacl + getfattr)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pi-acl-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function kernelHex(path: string, name: string): Promise<string> {
    const { stdout } = await execa('getfattr', ['--absolute-names', '-e', 'hex', '-n', name, path]);
    const m = /=0x([0-9a-f]+)/.exec(stdout);
    if (!m) throw new Error(`no ${name} on ${path}: ${stdout}`);
    return m[1];
  }

  const accessCases = [
    'user::rw-,user:1234:r--,group::r--,mask::r--,other::r--',
    'user::rwx,user:0:r-x,user:65534:---,user:1000:rw-,group::r-x,group:4:rwx,group:100:--x,mask::rwx,other::---',
    'user::r--,user:4000000000:rwx,group::---,mask::rw-,other::r--',
  ];
  for (const [i, text] of accessCases.entries()) {
    it(`access ACL ${i}: ${text}`, async () => {
      const f = join(dir, `f${i}`);
      await writeFile(f, 'x');
      await execa('setfacl', ['--set', text, f]);
      expect(aclTextToXattrHex(text, 'access')).toBe(await kernelHex(f, 'system.posix_acl_access'));
      // And back: getfacl's own numeric text gives the same value.
      const { stdout } = await execa('getfacl', ['-n', '-c', '-E', f]);
      expect(aclTextToXattrHex(stdout, 'access')).toBe(await kernelHex(f, 'system.posix_acl_access'));
    });
  }

  it('default ACL on a directory', async () => {
    const d = join(dir, 'd');
    await mkdir(d);
    const text = 'user::rwx,user:1234:rwx,group::r-x,group:27:r--,mask::rwx,other::r-x';
    await execa('setfacl', ['-d', '--set', text, d]);
    expect(aclTextToXattrHex(text, 'default')).toBe(await kernelHex(d, 'system.posix_acl_default'));
  });

  it('a missing mask is computed as setfacl computes it', async () => {
    const f = join(dir, 'nomask');
    await writeFile(f, 'x');
    const text = 'user::rw-,user:5:r--,group::--x,group:6:-w-,other::---';
    await execa('setfacl', ['--set', text, f]);
    expect(aclTextToXattrHex(text, 'access')).toBe(await kernelHex(f, 'system.posix_acl_access'));
  });
});
