// The inode number each new entry of the build script gets, computed the way
// libext2fs 1.47.0 picks it (lib/ext2fs/alloc.c, ext2fs_new_inode(): the
// first free inode from the start of the parent folder's group on, then the
// groups after it, wrapping to the first non-reserved inode). debugfs's
// mkdir, write, symlink and mknod all allocate through it with the folder
// they create in as the parent, and nothing else in the script allocates or
// frees an inode but `rmdir /lost+found`.
//
// Knowing the numbers lets the script name every inode it sets a field of as
// `<N>`: debugfs then reads that inode instead of looking its name up in the
// folder, a scan of the folder per command (with the mode of new folders and
// symlinks no longer set twice, debugfs's user time on the Debian root went
// from 0.48-0.56 s to 0.24-0.38 s). build/populate.ts checks each number
// debugfs reports for a `write` or `mknod` ("Allocated inode: N") against this one, so a
// libext2fs that allocates otherwise fails the build loudly instead of
// setting fields on the wrong inodes.

export interface InodeGeometry {
  /** s_inodes_count */
  inodeCount: number;
  /** s_inodes_per_group */
  inodesPerGroup: number;
  /** s_first_ino: the first inode that is not reserved (11 on every ext4 mke2fs makes: lost+found). */
  firstIno: number;
}

export class InodeAllocator {
  private readonly used: Uint8Array;
  /** Per group: every inode of the group below this one is in use. */
  private readonly low: Float64Array;
  private readonly ipg: number;
  private readonly count: number;
  private readonly first: number;

  /** A fresh filesystem from mke2fs: inodes 1 to firstIno (the reserved ones and lost+found) are in use. */
  constructor(g: InodeGeometry) {
    if (!(g.inodesPerGroup > 0) || !(g.inodeCount >= g.firstIno) || !(g.firstIno > 1)) {
      throw new Error(`bad inode geometry: ${JSON.stringify(g)}`);
    }
    this.ipg = g.inodesPerGroup;
    this.count = g.inodeCount;
    this.first = g.firstIno;
    this.used = new Uint8Array(this.count + 1);
    this.used.fill(1, 1, this.first + 1);
    const groups = Math.ceil(this.count / this.ipg);
    this.low = new Float64Array(groups);
    for (let i = 0; i < groups; i++) this.low[i] = i * this.ipg + 1;
    this.low[0] = this.first + 1;
  }

  private group(ino: number): number {
    return Math.floor((ino - 1) / this.ipg);
  }

  /** The inode a new entry in the folder `parent` gets; undefined when none is free (debugfs then fails the command). */
  alloc(parent: number): number | undefined {
    let start = parent > 0 ? this.group(parent) * this.ipg + 1 : 0;
    if (start < this.first) start = this.first;
    if (start > this.count) return undefined;
    let i = start;
    do {
      const inGroup = (i - 1) % this.ipg;
      let upto = i + (this.ipg - inGroup);
      if (i < start && upto >= start) upto = start - 1;
      if (upto > this.count) upto = this.count;
      const found = this.firstFree(i, upto);
      if (found !== undefined) {
        this.used[found] = 1;
        return found;
      }
      i = upto + 1;
      if (i > this.count) i = this.first;
    } while (i !== start);
    return undefined;
  }

  /** An inode freed (rmdir). */
  free(ino: number): void {
    this.used[ino] = 0;
    const g = this.group(ino);
    if (ino < this.low[g]) this.low[g] = ino;
  }

  /** The first free inode in [a, b] (both included, as ext2fs_find_first_zero_inode_bitmap2 searches). */
  private firstFree(a: number, b: number): number | undefined {
    let x = a;
    while (x <= b) {
      const g = this.group(x);
      const groupEnd = Math.min((g + 1) * this.ipg, this.count);
      const fromLow = x <= this.low[g];
      if (fromLow) x = this.low[g];
      while (x <= groupEnd && this.used[x]) x++;
      if (fromLow) this.low[g] = x;
      if (x <= groupEnd && x <= b) return x;
      x = groupEnd + 1;
    }
    return undefined;
  }
}
