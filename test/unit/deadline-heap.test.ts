/** The TTL deadline heap against a brute-force scan, under random pushes, touches and removals. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DeadlineHeap } from '../../src/store/deadline-heap.js';

describe('DeadlineHeap', () => {
  it('reports exactly the ids whose current deadline passed, again until they are removed', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(
          fc.record({ op: fc.constant('set' as const), id: fc.nat(20), at: fc.nat(1000) }),
          fc.record({ op: fc.constant('set' as const), id: fc.nat(3), at: fc.nat(5) }), // twins: the same deadline pushed again
          fc.record({ op: fc.constant('remove' as const), id: fc.nat(20) }),
          fc.record({ op: fc.constant('due' as const), now: fc.nat(1100) }),
        ), { maxLength: 200 }),
        (ops) => {
          const heap = new DeadlineHeap();
          const live = new Map<string, number>();
          for (const o of ops) {
            if (o.op === 'set') {
              live.set(`k${o.id}`, o.at);
              heap.push(o.at, `k${o.id}`);
            } else if (o.op === 'remove') {
              live.delete(`k${o.id}`);
            } else {
              const got = heap.due(o.now, (id) => live.get(id)).sort();
              const want = [...live].filter(([, at]) => at <= o.now).map(([id]) => id).sort();
              expect(got).toEqual(want);
              heap.compact(live, live.size);
            }
          }
        },
      ),
      { numRuns: 300, seed: 5 },
    );
  });
});
