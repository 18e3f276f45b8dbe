// collectGarbage(): a full collection on request, without --expose-gc on the command line.
import { describe, expect, it } from 'vitest';
import { collectGarbage } from '../src/memory.js';

describe('collectGarbage', () => {
  it('frees what nothing holds any more, at once', () => {
    collectGarbage();
    const base = process.memoryUsage().heapUsed;
    let junk: string[] | undefined = Array.from({ length: 200_000 }, (_, i) => `entry ${i} ${'x'.repeat(100)}`);
    const held = process.memoryUsage().heapUsed;
    expect(held - base).toBeGreaterThan(20 * 2 ** 20);
    expect(junk.length).toBe(200_000);
    junk = undefined;
    collectGarbage();
    expect(process.memoryUsage().heapUsed - base).toBeLessThan(5 * 2 ** 20);
    collectGarbage(); // a second call reuses the same function
  });
});
