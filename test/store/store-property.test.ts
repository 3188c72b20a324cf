/**
 * Property-based check of the store's invariants under random operation sequences with tiny
 * capacities: after every step capacities hold, has() agrees with get(), and a session only
 * disappears with an evict/expire/delete event.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { KvStore, encode, type CodecProfile } from '../../src/index.js';
import { session, sessionBytes, tempDir, testProfile } from '../helpers/store.js';

let profile: CodecProfile;
let blobBytes: number;
const dirs: (() => Promise<void>)[] = [];

beforeAll(async () => {
  profile = await testProfile();
  blobBytes = (await encode(session(1), profile)).length;
});
afterAll(async () => {
  for (const d of dirs) await d();
});

const ids = ['a', 'b', 'c', 'd', 'e', 'f'];
type Op =
  | { op: 'put'; id: string; seed: number; pin: boolean }
  | { op: 'get'; id: string; promote: boolean }
  | { op: 'evict'; id: string; to: 'host' | 'disk' }
  | { op: 'delete'; id: string };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('put' as const), id: fc.constantFrom(...ids), seed: fc.integer({ min: 1, max: 50 }), pin: fc.boolean() }),
  fc.record({ op: fc.constant('get' as const), id: fc.constantFrom(...ids), promote: fc.boolean() }),
  fc.record({ op: fc.constant('evict' as const), id: fc.constantFrom(...ids), to: fc.constantFrom('host' as const, 'disk' as const) }),
  fc.record({ op: fc.constant('delete' as const), id: fc.constantFrom(...ids) }),
);

describe('store invariants', () => {
  it('capacities hold, has() agrees with get(), sessions vanish only with events', async () => {
    let steps = 0;
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 25 }), async (ops) => {
        runs++;
        const t = await tempDir();
        dirs.push(t.cleanup);
        const caps = { device: Math.floor(sessionBytes() * 2.5), host: Math.floor(blobBytes * 1.5), disk: Math.floor(blobBytes * 3.5) };
        const store = await KvStore.open({
          profile,
          path: t.path,
          tiers: { device: { capacityBytes: caps.device }, host: { capacityBytes: caps.host }, disk: { capacityBytes: caps.disk } },
          workers: { minThreads: 1, maxThreads: 2 },
        });
        const alive = new Set<string>();
        const gone: string[] = [];
        store.on('evict', (e) => {
          if (e.to === undefined) gone.push(e.id);
        });
        store.on('expire', (e) => gone.push(e.id));
        store.on('delete', (e) => gone.push(e.id));
        try {
          for (const o of ops) {
            steps++;
            try {
              if (o.op === 'put') {
                await store.put(o.id, session(o.seed), { pin: o.pin });
                alive.add(o.id);
              } else if (o.op === 'get') {
                const got = await store.get(o.id, { promote: o.promote });
                expect(got !== undefined).toBe(alive.has(o.id));
              } else if (o.op === 'evict') {
                await store.evict(o.id, { to: o.to });
              } else {
                await store.delete(o.id);
              }
            } catch (err) {
              // Pinning beyond the hot tier is refused, with the store unchanged.
              expect((err as { code?: string }).code).toBe('E_CAPACITY');
              expect(o.op === 'put' && o.pin).toBe(true);
            }
            await store.settled(); // gets do not wait for the policy work they cause
            for (const id of gone.splice(0)) alive.delete(id);
            const s = store.stats();
            expect(s.device.rawBytes).toBeLessThanOrEqual(caps.device);
            expect(s.host.storedBytes).toBeLessThanOrEqual(caps.host);
            expect(s.disk.storedBytes).toBeLessThanOrEqual(caps.disk);
            for (const id of ids) expect(store.has(id) !== undefined, `has(${id}) after ${JSON.stringify(o)}`).toBe(alive.has(id));
          }
        } finally {
          await store.close();
        }
      }),
      { numRuns: 40, seed: 4242 },
    );
    console.log(`[store-property] ${runs} random sequences, ${steps} operations checked`);
  });
});
