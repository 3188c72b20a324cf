/** Reference counts of disk chunks: totals follow every change; a chunk at zero stays until dropped. */
import { describe, expect, it } from 'vitest';
import { ChunkCounts } from '../../src/store/chunk-counts.js';
import { mulberry32 } from '../helpers/synthetic.js';
import { packChunks, unpackChunks } from '../../src/store/packed-chunks.js';

const A = 'a'.repeat(32);
const B = '0123456789abcdef'.repeat(2);

describe('ChunkCounts', () => {
  it('counts references, bytes once and the bytes sharing saves', () => {
    const c = new ChunkCounts();
    c.ref(A, 100);
    c.ref(B, 10);
    c.ref(A, 100);
    c.ref(A, 100);
    expect(c.refs(A)).toBe(3);
    expect(c.totals()).toEqual({ chunks: 2, refs: 4, bytes: 110, saved: 200 });
    c.unref(A);
    expect(c.totals()).toEqual({ chunks: 2, refs: 3, bytes: 110, saved: 100 });
    c.unref(B);
    c.unref(B); // already at zero: nothing changes
    expect(c.refs(B)).toBe(0);
    expect(c.has(B)).toBe(true); // counted until its removal is applied
    expect(c.totals()).toEqual({ chunks: 2, refs: 2, bytes: 110, saved: 100 });
    c.ref(B, 10); // referenced again before it was removed
    expect(c.totals()).toEqual({ chunks: 2, refs: 3, bytes: 110, saved: 100 });
    c.drop(A); // a shared chunk removed (a quarantine): its references go with it
    expect(c.totals()).toEqual({ chunks: 1, refs: 1, bytes: 10, saved: 0 });
    expect(c.bytesOf(A)).toBeUndefined();
    expect(c.refs(A)).toBe(0);
  });

  it('agrees with a plain model through 300k random operations (growth, collisions, removals)', () => {
    const c = new ChunkCounts();
    const model = new Map<string, { bytes: number; refs: number }>();
    const rand = mulberry32(77);
    // Few distinct high words: many keys share their first 8 digits (patterned keys).
    const keys = Array.from({ length: 20_000 }, (_, i) => (i % 7).toString(16).padStart(8, '0') + Math.floor(rand() * 2 ** 32).toString(16).padStart(8, '0') + i.toString(16).padStart(16, '0'));
    for (let op = 0; op < 300_000; op++) {
      const key = keys[Math.floor(rand() * (op < 150_000 ? keys.length : keys.length / 4))]!;
      const r = rand();
      const m = model.get(key);
      if (r < 0.5) {
        const bytes = m?.bytes ?? 1 + Math.floor(rand() * 1000);
        c.ref(key, bytes);
        if (m) m.refs++;
        else model.set(key, { bytes, refs: 1 });
      } else if (r < 0.8) {
        c.unref(key);
        if (m && m.refs > 0) m.refs--;
      } else {
        c.drop(key);
        model.delete(key);
      }
      if (op % 20_000 === 0 || op === 299_999) {
        let bytes = 0;
        let refs = 0;
        let saved = 0;
        for (const [k, v] of model) {
          expect(c.refs(k)).toBe(v.refs);
          expect(c.bytesOf(k)).toBe(v.bytes);
          bytes += v.bytes;
          refs += v.refs;
          saved += Math.max(0, v.refs - 1) * v.bytes;
        }
        expect(c.totals()).toEqual({ chunks: model.size, refs, bytes, saved });
        for (const k of keys.slice(0, 2000)) expect(c.has(k)).toBe(model.has(k));
      }
    }
  });

  it('a packed chunk list counts the same chunks as their key strings', () => {
    const refs = [{ key: A, bytes: 100, tokens: 8 }, { key: B, bytes: 7, tokens: 3 }, { key: 'f'.repeat(32), bytes: 1, tokens: 1 }];
    const packed = packChunks(refs);
    expect(unpackChunks(packed)).toEqual(refs);
    const c = new ChunkCounts();
    c.refPacked(packed);
    c.ref(B, 7);
    expect([c.refs(A), c.refs(B), c.refs('f'.repeat(32))]).toEqual([1, 2, 1]);
    expect(c.totals()).toEqual({ chunks: 3, refs: 4, bytes: 108, saved: 7 });
    c.unrefPacked(packed);
    expect([c.refs(A), c.refs(B), c.refs('f'.repeat(32))]).toEqual([0, 1, 0]);
    c.reserve(100_000);
    expect(c.totals()).toEqual({ chunks: 3, refs: 1, bytes: 108, saved: 0 });
    expect(c.refs(B)).toBe(1);
  });

  it('rejects a key that is not 32 hex digits', () => {
    expect(() => new ChunkCounts().ref('xyz', 1)).toThrow(/32 hex digits/);
  });
});
