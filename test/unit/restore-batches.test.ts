/** A restore's parts are cut into a few runs of neighbours (one task per restore worker). */
import { describe, expect, it } from 'vitest';
import { batchesOf } from '../../src/store/codec-routing.js';
import { mulberry32 } from '../helpers/synthetic.js';

describe('batchesOf', () => {
  it('keeps every part once, in order, in at most n non-empty runs of about equal tokens', () => {
    const rand = mulberry32(5);
    for (let trial = 0; trial < 300; trial++) {
      const count = 1 + Math.floor(rand() * 40);
      const parts = Array.from({ length: count }, (_, i) => ({ i, tokens: 1 + Math.floor(rand() * (rand() < 0.2 ? 500 : 64)) }));
      const n = 1 + Math.floor(rand() * 9);
      const runs = batchesOf(parts, n);
      expect(runs.length).toBe(Math.min(n, count));
      expect(runs.every((r) => r.length > 0)).toBe(true);
      expect(runs.flat().map((p) => p.i)).toEqual(parts.map((p) => p.i));
      // No run is larger than its share by more than its largest part.
      const total = parts.reduce((s, p) => s + p.tokens, 0);
      for (const r of runs) {
        const t = r.reduce((s, p) => s + p.tokens, 0);
        expect(t).toBeLessThanOrEqual(total / runs.length + Math.max(...parts.map((p) => p.tokens)));
      }
    }
  });

  it('a session of 16 equal chunks and a tail on 2 workers: two runs of 8-9 parts', () => {
    const parts = [...Array.from({ length: 16 }, () => ({ tokens: 256 })), { tokens: 100 }];
    const runs = batchesOf(parts, 2);
    expect(runs.map((r) => r.length)).toEqual([9, 8]);
  });
});
