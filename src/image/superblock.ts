// The primary ext2/3/4 superblock, read straight from the image file, and the
// reasons the kernel would refuse the filesystem (or see something other than
// what debugfs reads) that can be told from the superblock alone.
//
// debugfs and e2fsck trust the superblock in ways the kernel does not: debugfs
// opens with checksum errors ignored, and e2fsck -n only warns (and exits 0)
// when the file is shorter than the block count. These checks do not depend
// on any tool's wording or locale.
import { open } from 'node:fs/promises';

/** Byte offset of the primary superblock, and its size. */
export const SUPERBLOCK_OFFSET = 1024;
const SB_SIZE = 1024;
const EXT4_MAGIC = 0xef53;

const COMPAT_HAS_JOURNAL = 0x4;
const INCOMPAT_RECOVER = 0x4;
const INCOMPAT_JOURNAL_DEV = 0x8;
const INCOMPAT_64BIT = 0x80;
const RO_COMPAT_METADATA_CSUM = 0x400;
/**
 * The incompatible features Linux ext4 mounts (EXT4_FEATURE_INCOMPAT_SUPP in
 * fs/ext4/ext4.h): filetype, recover, meta_bg, extent, 64bit, mmp, flex_bg,
 * ea_inode, csum_seed, largedir, inline_data, encrypt, casefold. Any other bit
 * (compression, dirdata, or an unknown one) and the kernel refuses to mount.
 */
const KERNEL_INCOMPAT = 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000;
const STATE_VALID = 0x1;
const STATE_ERROR = 0x2;

export interface Ext4Superblock {
  blockSize: number;
  blockCount: bigint;
  inodeCount: number;
  /** s_free_inodes_count: as of the last time the filesystem was closed (the kernel does not keep it current while mounted). */
  freeInodeCount: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  /** s_first_ino, the first inode that is not reserved (11 on revision 0, which has no such field). */
  firstIno: number;
  /** s_state: bit 0 cleanly unmounted, bit 1 errors detected. */
  state: number;
  featureCompat: number;
  featureIncompat: number;
  featureRoCompat: number;
  journalInode: number;
  /** With metadata_csum: whether s_checksum matches; undefined without it. */
  checksumOk?: boolean;
  storedChecksum?: number;
  computedChecksum?: number;
}

/** The superblock of `path`, or why there is none; `fileSize` is the size of the file. */
export interface SuperblockRead {
  fileSize: number;
  superblock?: Ext4Superblock;
  /** Why `path` is not an ext2/3/4 image at all. */
  notExt4?: string;
}

/** Parses the 1024 bytes at offset 1024; a string says why they are not an ext2/3/4 superblock. */
export function parseSuperblock(sb: Buffer): Ext4Superblock | string {
  if (sb.length < SB_SIZE) return `the file ends before the superblock does (byte ${SUPERBLOCK_OFFSET + SB_SIZE})`;
  if (sb.readUInt16LE(0x38) !== EXT4_MAGIC) return `no ext2/3/4 superblock magic 0xEF53 at byte ${SUPERBLOCK_OFFSET + 0x38}`;
  const logBlockSize = sb.readUInt32LE(0x18);
  if (logBlockSize > 6) return `the superblock gives an impossible block size (s_log_block_size ${logBlockSize}, at most 6 = 64 KiB)`;
  const incompat = sb.readUInt32LE(0x60);
  const roCompat = sb.readUInt32LE(0x64);
  const lo = BigInt(sb.readUInt32LE(0x04));
  const hi = incompat & INCOMPAT_64BIT ? BigInt(sb.readUInt32LE(0x150)) : 0n;
  const out: Ext4Superblock = {
    blockSize: 1024 << logBlockSize,
    blockCount: (hi << 32n) | lo,
    inodeCount: sb.readUInt32LE(0x00),
    freeInodeCount: sb.readUInt32LE(0x10),
    blocksPerGroup: sb.readUInt32LE(0x20),
    inodesPerGroup: sb.readUInt32LE(0x28),
    firstIno: sb.readUInt32LE(0x4c) === 0 ? 11 : sb.readUInt32LE(0x54),
    state: sb.readUInt16LE(0x3a),
    featureCompat: sb.readUInt32LE(0x5c),
    featureIncompat: incompat,
    featureRoCompat: roCompat,
    journalInode: sb.readUInt32LE(0xe0),
  };
  if (roCompat & RO_COMPAT_METADATA_CSUM) {
    out.storedChecksum = sb.readUInt32LE(0x3fc);
    out.computedChecksum = crc32c(0xffffffff, sb.subarray(0, 0x3fc));
    out.checksumOk = out.storedChecksum === out.computedChecksum;
  }
  return out;
}

/** Reads the primary superblock of an image file (or block device). */
export async function readExt4Superblock(path: string): Promise<SuperblockRead> {
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    const fileSize = st.isBlockDevice() ? await deviceSize(fh) : st.size;
    const buf = Buffer.alloc(SB_SIZE);
    const { bytesRead } = await fh.read(buf, 0, SB_SIZE, SUPERBLOCK_OFFSET);
    const parsed = parseSuperblock(buf.subarray(0, bytesRead));
    if (typeof parsed === 'string') {
      const why = fileSize < SUPERBLOCK_OFFSET + SB_SIZE ? `the file is only ${fileSize} bytes, and an ext2/3/4 superblock ends at byte ${SUPERBLOCK_OFFSET + SB_SIZE}` : parsed;
      return { fileSize, notExt4: why };
    }
    return { fileSize, superblock: parsed };
  } finally {
    await fh.close();
  }
}

async function deviceSize(fh: Awaited<ReturnType<typeof open>>): Promise<number> {
  // The size of a block device: where reading stops (binary search on 512-byte sectors).
  const one = Buffer.alloc(1);
  let lo = 0;
  let hi = 1;
  while ((await fh.read(one, 0, 1, hi * 512 - 1)).bytesRead === 1) hi *= 2;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if ((await fh.read(one, 0, 1, mid * 512 - 1)).bytesRead === 1) lo = mid;
    else hi = mid;
  }
  return lo * 512;
}

/** The size the superblock claims: block count × block size. */
export function claimedBytes(sb: Ext4Superblock): bigint {
  return sb.blockCount * BigInt(sb.blockSize);
}

export interface SuperblockProblem {
  /** truncated | superblock-checksum | superblock | features | journal */
  code: string;
  message: string;
  expected?: unknown;
  actual?: unknown;
}

/**
 * What in the superblock makes the kernel refuse the filesystem, or mount
 * something other than what a rootless reader sees (a journal to replay).
 * Empty when none: the image may still be damaged further in.
 */
export function superblockProblems(sb: Ext4Superblock, fileSize: number): SuperblockProblem[] {
  const out: SuperblockProblem[] = [];
  if (sb.checksumOk === false) {
    out.push({
      code: 'superblock-checksum',
      message: `the superblock checksum does not match (stored 0x${hex(sb.storedChecksum!)}, computed 0x${hex(sb.computedChecksum!)}): the superblock is damaged, and the kernel refuses to mount it`,
      expected: `0x${hex(sb.computedChecksum!)}`,
      actual: `0x${hex(sb.storedChecksum!)}`,
    });
  }
  if (sb.blockCount === 0n || sb.inodeCount === 0 || sb.blocksPerGroup === 0 || sb.inodesPerGroup === 0) {
    out.push({ code: 'superblock', message: `the superblock is damaged: ${sb.blockCount} blocks, ${sb.inodeCount} inodes, ${sb.blocksPerGroup} blocks and ${sb.inodesPerGroup} inodes per group` });
  }
  const claimed = claimedBytes(sb);
  if (BigInt(fileSize) < claimed) {
    out.push({
      code: 'truncated',
      message: `the file is ${fileSize} bytes, but its superblock says ${sb.blockCount} blocks of ${sb.blockSize} bytes (${claimed} bytes): the image is truncated (or its superblock is wrong), and the kernel refuses to mount it`,
      expected: Number(claimed),
      actual: fileSize,
    });
  }
  const unknown = sb.featureIncompat & ~KERNEL_INCOMPAT;
  if (sb.featureIncompat & INCOMPAT_JOURNAL_DEV) {
    out.push({ code: 'features', message: 'this is an external journal device (journal_dev), not a filesystem' });
  } else if (unknown) {
    out.push({ code: 'features', message: `the superblock has incompatible features the Linux kernel does not support (0x${hex(unknown)}): it refuses to mount it` });
  }
  if (sb.featureIncompat & INCOMPAT_RECOVER) {
    out.push({ code: 'journal', message: 'the journal needs recovery (needs_recovery): the kernel replays it on mount, so the files it would show differ from what is read here; replay it first (e2fsck -fy on a copy)' });
  }
  if (sb.featureCompat & COMPAT_HAS_JOURNAL && sb.journalInode === 0) {
    out.push({ code: 'journal', message: 'the journal is on another device (external journal): the kernel does not mount it without that device' });
  }
  return out;
}

/** Facts the kernel mounts anyway but that say the filesystem was not left clean. */
export function superblockWarnings(sb: Ext4Superblock): SuperblockProblem[] {
  const out: SuperblockProblem[] = [];
  if (sb.state & STATE_ERROR) out.push({ code: 'superblock-state', message: 'the superblock records errors (s_state has ERROR_FS): the kernel found a problem in this filesystem while it was mounted' });
  if (!(sb.state & STATE_VALID)) out.push({ code: 'superblock-state', message: 'the superblock says the filesystem was not cleanly unmounted (s_state lacks VALID_FS)' });
  return out;
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}

// CRC32C (Castagnoli), the raw register update e2fsprogs and the kernel use
// for metadata checksums: ext2fs_crc32c_le(~0, buf, len), no final inversion.
const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

export function crc32c(seed: number, data: Buffer): number {
  let crc = seed >>> 0;
  for (const b of data) crc = (CRC32C_TABLE[(crc ^ b) & 0xff] ^ (crc >>> 8)) >>> 0;
  return crc >>> 0;
}
