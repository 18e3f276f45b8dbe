// The image reader's inode-number map (image/inode-table.ts): the array form
// and the Map form answer alike; an inode past the array is refused, not
// stored as an array property.
import { describe, expect, it } from 'vitest';
import { InodeTable } from '../src/image/inode-table.js';

describe('InodeTable', () => {
  for (const [form, arrayUpTo] of [['array', 1000], ['Map', 10]] as const) {
    it(`${form}: get, has, set, size over inode numbers 1-100`, () => {
      const t = new InodeTable<string>(100, arrayUpTo);
      expect(t.size).toBe(0);
      expect(t.get(2)).toBeUndefined();
      t.set(2, 'root');
      t.set(100, 'last');
      t.set(2, 'root again');
      expect(t.size).toBe(2);
      expect(t.get(2)).toBe('root again');
      expect(t.has(100)).toBe(true);
      expect(t.has(99)).toBe(false);
      t.clear();
      expect(t.size).toBe(0);
      expect(t.get(2)).toBeUndefined();
    });
  }

  it('array form: an inode number past the table is a RangeError', () => {
    const t = new InodeTable<number>(100);
    expect(() => t.set(101, 1)).toThrow(RangeError);
    expect(() => t.set(-1, 1)).toThrow(/outside the table's 1-100/);
    expect(t.size).toBe(0);
  });

  it('a filesystem of a billion inodes gets the Map form (no array of that length is made)', () => {
    const t = new InodeTable<number>(1_000_000_000);
    t.set(999_999_999, 7);
    expect(t.get(999_999_999)).toBe(7);
    expect(t.size).toBe(1);
  });
});
