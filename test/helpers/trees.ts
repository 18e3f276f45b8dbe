// Small real trees with every kind of entry part-image must carry.
import { mkdir, symlink, writeFile, link, chmod, chown } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';

export const isRoot = process.getuid?.() === 0;

/**
 * Builds a tree under `root` with: dirs, files (empty, text, binary, sparse),
 * setuid/setgid/sticky modes, odd owners, symlinks (short and long target),
 * a hardlink pair, a fifo, char and block devices, user.* and
 * security.capability xattrs, a POSIX ACL, and names with spaces and unicode.
 * Needs root (owners, devices, capabilities); without it, it throws.
 */
export async function makeSampleTree(root: string): Promise<void> {
  if (!isRoot) throw new Error('these tests need root (CI runs as root): run npm test as root');
  await mkdir(join(root, 'usr/bin'), { recursive: true });
  await mkdir(join(root, 'etc'), { recursive: true });
  await mkdir(join(root, 'tmp'), { recursive: true });
  await mkdir(join(root, 'dev'), { recursive: true });
  await mkdir(join(root, 'srv/odd names/ünïcödé'), { recursive: true });
  await chmod(join(root, 'tmp'), 0o1777);
  await writeFile(join(root, 'etc/os-release'), 'ID=sample\nNAME="Sample"\n');
  await writeFile(join(root, 'etc/empty'), '');
  await writeFile(join(root, 'usr/bin/tool'), Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2, 3, 255]));
  await chmod(join(root, 'usr/bin/tool'), 0o4755);
  await writeFile(join(root, 'usr/bin/pinglike'), 'pretend binary\n');
  await chmod(join(root, 'usr/bin/pinglike'), 0o755);
  await writeFile(join(root, 'usr/bin/group-tool'), 'sgid\n');
  await chmod(join(root, 'usr/bin/group-tool'), 0o2711);
  await writeFile(join(root, 'srv/odd names/file with spaces.txt'), 'spaces\n');
  await writeFile(join(root, 'srv/odd names/ünïcödé/naïve.txt'), 'unicode\n');
  await writeFile(join(root, 'srv/big.bin'), Buffer.alloc(300_000, 7));
  // A sparse file: 1 MiB hole, then data.
  await execa('truncate', ['-s', '1M', join(root, 'srv/sparse.bin')]);
  await execa('sh', ['-c', 'printf tail >> "$1"', 'sh', join(root, 'srv/sparse.bin')]);
  await writeFile(join(root, 'srv/hard-a'), 'linked\n');
  await link(join(root, 'srv/hard-a'), join(root, 'srv/hard-b'));
  await symlink('../usr/bin/tool', join(root, 'srv/short-link'));
  await symlink('/' + 'very-long-target/'.repeat(6) + 'end', join(root, 'srv/long-link'));
  await execa('mkfifo', [join(root, 'srv/fifo')]);
  await writeFile(join(root, 'srv/owned'), 'owned\n');
  await execa('setfattr', ['-n', 'user.note', '-v', 'hello', join(root, 'srv/owned')]);
  await execa('setfattr', ['-n', 'user.bin', '-v', '0x00ff10', join(root, 'srv/owned')]);
  await execa('setfacl', ['-m', 'u:1234:r--', join(root, 'srv/big.bin')]);
  await chown(join(root, 'srv/owned'), 1000, 1001);
  await chown(join(root, 'srv/odd names'), 4242, 65534);
  await execa('setcap', ['cap_net_raw=ep', join(root, 'usr/bin/pinglike')]);
  await execa('mknod', ['-m', '666', join(root, 'dev/null'), 'c', '1', '3']);
  await execa('mknod', ['-m', '660', join(root, 'dev/loop9'), 'b', '7', '9']);
}
