/** Reference counts of disk chunks: totals follow every change; a chunk at zero stays until dropped. */
import { describe, expect, it } from 'vitest';
import { ChunkCounts } from '../../src/store/chunk-counts.js';

describe('ChunkCounts', () => {
  it('counts references, bytes once and the bytes sharing saves', () => {
    const c = new ChunkCounts();
    c.ref('a', 100);
    c.ref('b', 10);
    c.ref('a', 100);
    c.ref('a', 100);
    expect(c.refs('a')).toBe(3);
    expect(c.totals()).toEqual({ chunks: 2, refs: 4, bytes: 110, saved: 200 });
    c.unref('a');
    expect(c.totals()).toEqual({ chunks: 2, refs: 3, bytes: 110, saved: 100 });
    c.unref('b');
    c.unref('b'); // already at zero: nothing changes
    expect(c.refs('b')).toBe(0);
    expect(c.has('b')).toBe(true); // counted until its removal is applied
    expect(c.totals()).toEqual({ chunks: 2, refs: 2, bytes: 110, saved: 100 });
    c.ref('b', 10); // referenced again before it was removed
    expect(c.totals()).toEqual({ chunks: 2, refs: 3, bytes: 110, saved: 100 });
    c.drop('a'); // a shared chunk removed (a quarantine): its references go with it
    expect(c.totals()).toEqual({ chunks: 1, refs: 1, bytes: 10, saved: 0 });
    expect(c.bytesOf('a')).toBeUndefined();
    expect(c.refs('a')).toBe(0);
  });
});
