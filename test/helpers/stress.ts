/**
 * The random-operation stress loop shared by the CPU and CUDA stress tests: batches of
 * concurrent put/get/evict/delete on distinct ids, a model of which sessions are alive, and
 * after every batch: capacities hold, has() agrees with the model, sessions vanish only with
 * evict/expire/delete events, plus the caller's own invariants (check).
 */
import { expect } from 'vitest';
import type { KvStore } from '../../src/index.js';
import { session } from './store.js';
import { mulberry32 } from './synthetic.js';

export interface StressOptions {
  ops: number;
  ids: number;
  parallel: number;
  caps: { device: number; host: number; disk: number };
  /** Extra invariants after every batch. */
  check?: () => Promise<void> | void;
  seed?: number;
}

export async function runStress(store: KvStore, o: StressOptions): Promise<{ done: number; ids: string[]; alive: Set<string> }> {
  const alive = new Set<string>();
  const vanished: string[] = [];
  store.on('evict', (e) => e.to === undefined && vanished.push(e.id));
  store.on('expire', (e) => vanished.push(e.id));
  store.on('delete', (e) => vanished.push(e.id));
  const corrupt: string[] = [];
  store.on('corrupt', (e) => corrupt.push(e.id));
  const rand = mulberry32(o.seed ?? 99);
  const ids = Array.from({ length: o.ids }, (_, i) => `sess-${i}`);
  let done = 0;
  const caches = Array.from({ length: 16 }, (_, i) => session(500 + i)); // reused payloads
  while (done < o.ops) {
    // A batch of operations on distinct ids runs concurrently; per-id results are then
    // deterministic, so the model can follow them.
    const batch = new Set<string>();
    while (batch.size < o.parallel) batch.add(ids[Math.floor(rand() * o.ids)]!);
    const results = await Promise.all(
      [...batch].map(async (id) => {
        const r = rand();
        if (r < 0.35) {
          await store.put(id, caches[Math.floor(rand() * caches.length)]!, { priority: Math.floor(rand() * 3) });
          return { id, op: 'put' as const };
        }
        if (r < 0.75) return { id, op: 'get' as const, found: (await store.get(id, { promote: rand() < 0.7 })) !== undefined };
        if (r < 0.92) {
          await store.evict(id, { to: rand() < 0.5 ? 'host' : 'disk' });
          return { id, op: 'evict' as const };
        }
        await store.delete(id);
        return { id, op: 'delete' as const };
      }),
    );
    done += results.length;
    await store.settled(); // gets do not wait for the policy work they cause
    // Apply puts first: an eviction event raised by this batch may concern a session it put.
    const gone = vanished.splice(0);
    for (const r of results) {
      // A get finds exactly the sessions alive before the batch, except those a concurrent
      // operation pushed out of the store (with an event) before the get ran.
      if (r.op === 'get' && r.found) expect(alive.has(r.id), `get(${r.id}) found a session the model lacks`).toBe(true);
      if (r.op === 'get' && !r.found && alive.has(r.id)) expect(gone, `get(${r.id}) missed a live session`).toContain(r.id);
    }
    for (const r of results) if (r.op === 'put') alive.add(r.id);
    for (const id of gone) alive.delete(id);
    for (const r of results) if (r.op === 'delete') alive.delete(r.id);
    const s = store.stats();
    expect(s.device.rawBytes).toBeLessThanOrEqual(o.caps.device);
    expect(s.host.storedBytes).toBeLessThanOrEqual(o.caps.host);
    expect(s.disk.storedBytes).toBeLessThanOrEqual(o.caps.disk);
    for (const id of batch) expect(store.has(id) !== undefined, `has(${id})`).toBe(alive.has(id));
    await o.check?.();
  }
  expect(corrupt).toEqual([]);
  for (const id of ids) expect(store.has(id) !== undefined).toBe(alive.has(id));
  return { done, ids, alive };
}
