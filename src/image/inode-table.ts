// A map from inode number to a value, for the image reader: an array indexed
// by inode number when the filesystem has few enough inodes to make one
// cheap (8 bytes a slot, where a Map took about 40 bytes an entry: 20 MB at
// 500,000 inodes), else a Map (a filesystem can have a billion inodes and
// use a few).
const ARRAY_UP_TO = 8 * 1024 * 1024;

export class InodeTable<T> {
  private readonly slots: (T | undefined)[] | undefined;
  private readonly map: Map<number, T> | undefined;
  private count = 0;

  constructor(inodeCount: number, arrayUpTo = ARRAY_UP_TO) {
    if (inodeCount <= arrayUpTo) this.slots = new Array<T | undefined>(inodeCount + 1);
    else this.map = new Map();
  }

  get size(): number {
    return this.map ? this.map.size : this.count;
  }

  get(ino: number): T | undefined {
    return this.slots ? this.slots[ino] : this.map!.get(ino);
  }

  has(ino: number): boolean {
    return this.get(ino) !== undefined;
  }

  /** `ino` must be a valid inode number (1 to the inode count): a bigger one goes into the array as a property. */
  set(ino: number, value: T): void {
    if (!this.slots) {
      this.map!.set(ino, value);
      return;
    }
    if (ino < 0 || ino >= this.slots.length) throw new RangeError(`inode ${ino} is outside the table's 1-${this.slots.length - 1}`);
    if (this.slots[ino] === undefined) this.count++;
    this.slots[ino] = value;
  }

  /** Lets everything go; the table is not used again. */
  clear(): void {
    if (this.slots) this.slots.length = 0;
    else this.map!.clear();
    this.count = 0;
  }
}
