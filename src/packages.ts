// Which Debian package brings each host tool. Used for "tool missing" hints
// and by `part-image doctor`.
export const TOOL_PACKAGES: Record<string, string> = {
  'mke2fs': 'e2fsprogs',
  'e2fsck': 'e2fsprogs',
  'debugfs': 'e2fsprogs',
  'dumpe2fs': 'e2fsprogs',
  'getfattr': 'attr',
  'setfattr': 'attr',
  'mount': 'mount',
  'umount': 'mount',
  'losetup': 'mount',
  'systemd-nspawn': 'systemd-container',
  'portablectl': 'systemd-container',
  'qemu-img': 'qemu-utils',
  'qemu-system-x86_64': 'qemu-system-x86',
  'mmdebstrap': 'mmdebstrap',
  'bsdtar': 'libarchive-tools',
  'mtree': 'mtree-netbsd',
  'busybox': 'busybox-static',
  'setcap': 'libcap2-bin',
  'getcap': 'libcap2-bin',
};

export function packageFor(tool: string): string | undefined {
  return TOOL_PACKAGES[tool.split('/').pop() ?? tool];
}
