/** LRU order by timestamp, ties by arrival, for accesses in and out of time order. */
import { describe, expect, it } from 'vitest';
import { LruOrder } from '../../src/store/lru-order.js';
import { mulberry32 } from '../helpers/synthetic.js';

/** The order a stable sort of the live placements gives (the definition). */
function model(live: Map<string, [number, number]>): string[] {
  return [...live].sort((a, b) => a[1][0] - b[1][0] || a[1][1] - b[1][1]).map(([id]) => id);
}

describe('LruOrder', () => {
  it('agrees with a stable sort through random placements, moves and deletes, in and out of time order', () => {
    const rand = mulberry32(9);
    const o = new LruOrder();
    const live = new Map<string, [number, number]>();
    let clock = 1000;
    let seq = 0;
    for (let op = 0; op < 20_000; op++) {
      const id = `s${Math.floor(rand() * 300)}`;
      const r = rand();
      if (r < 0.15) {
        o.delete(id);
        live.delete(id);
      } else {
        // Mostly in time order (with ties); sometimes an older timestamp (a spill, a skewed clock).
        const at = r < 0.35 ? clock - Math.floor(rand() * 2000) : (clock += Math.floor(rand() * 3));
        o.place(id, at);
        live.set(id, [at, seq++]);
      }
      if (op % 500 === 0 || op === 19_999) {
        const want = model(live);
        expect(o.ids()).toEqual(want);
        expect(o.size).toBe(live.size);
        expect(o.first(() => true)).toBe(want[0]);
        // The first id past a refusal set (what the store's eviction skips: pinned, failed).
        const refuse = new Set(want.filter(() => rand() < 0.3));
        expect(o.first((id) => !refuse.has(id))).toBe(want.find((id) => !refuse.has(id)));
        expect(o.ids()).toEqual(want); // refused entries are back in place
      }
    }
  });

  it('an empty order has no first id', () => {
    const o = new LruOrder();
    expect(o.first(() => true)).toBeUndefined();
    o.place('a', 5);
    o.place('b', 1);
    o.delete('a');
    o.delete('b');
    expect(o.first(() => true)).toBeUndefined();
    expect(o.ids()).toEqual([]);
  });
});
