/**
 * Concurrency and memory under stress: thousands of random operations over hundreds of sessions
 * with tiny capacities and several workers. After every step capacities hold, has() agrees with
 * the model, sessions vanish only with evict/expire/delete events, and the host tier's native
 * memory equals its accounting; closing the store releases it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvStore, encode, type CodecProfile } from '../../src/index.js';
import { native } from '../../src/binding.js';
import { session, sessionBytes, tempDir, testProfile } from '../helpers/store.js';
import { mulberry32 } from '../helpers/synthetic.js';

const OPS = Number(process.env.KVTC_STRESS_OPS ?? 2400);
const IDS = 200;
const PARALLEL = 8;
let profile: CodecProfile;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  profile = await testProfile();
});
afterAll(async () => {
  for (const c of cleanups) await c();
});

describe('stress', () => {
  it(`${OPS} random operations over ${IDS} sessions keep every invariant`, async () => {
    const t = await tempDir();
    cleanups.push(t.cleanup);
    const blob = (await encode(session(1), profile)).length;
    const caps = { device: sessionBytes() * 4, host: blob * 6, disk: blob * 60 };
    const arenaBefore = native.arenaStats().bytes;
    const rssBefore = process.memoryUsage().rss;
    const store = await KvStore.open({
      profile,
      path: t.path,
      tiers: { device: { capacityBytes: caps.device, idleMs: 0 }, host: { capacityBytes: caps.host, idleMs: 0 }, disk: { capacityBytes: caps.disk } },
      workers: { minThreads: 2, maxThreads: 4 },
    });
    const alive = new Set<string>();
    const vanished: string[] = [];
    store.on('evict', (e) => e.to === undefined && vanished.push(e.id));
    store.on('expire', (e) => vanished.push(e.id));
    store.on('delete', (e) => vanished.push(e.id));
    const corrupt: string[] = [];
    store.on('corrupt', (e) => corrupt.push(e.id));
    const rand = mulberry32(99);
    const ids = Array.from({ length: IDS }, (_, i) => `sess-${i}`);
    let done = 0;
    let maxRss = 0;
    const caches = Array.from({ length: 16 }, (_, i) => session(500 + i)); // reused payloads
    while (done < OPS) {
      // A batch of operations on distinct ids runs concurrently; per-id results are then
      // deterministic, so the model can follow them.
      const batch = new Set<string>();
      while (batch.size < PARALLEL) batch.add(ids[Math.floor(rand() * IDS)]!);
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
      expect(s.device.rawBytes).toBeLessThanOrEqual(caps.device);
      expect(s.host.storedBytes).toBeLessThanOrEqual(caps.host);
      expect(s.disk.storedBytes).toBeLessThanOrEqual(caps.disk);
      expect(native.arenaStats().bytes - arenaBefore).toBe(s.host.storedBytes);
      for (const id of batch) expect(store.has(id) !== undefined, `has(${id})`).toBe(alive.has(id));
      maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }
    expect(corrupt).toEqual([]);
    const s = store.stats();
    for (const id of ids) expect(store.has(id) !== undefined).toBe(alive.has(id));
    await store.close();
    expect(native.arenaStats().bytes).toBe(arenaBefore);
    const growth = (maxRss - rssBefore) / 1e6;
    console.log(
      `[stress] ${done} operations over ${IDS} sessions, ${PARALLEL} concurrent; final tiers ${s.device.entries}/${s.host.entries}/${s.disk.entries}; ` +
        `hits ${s.device.hits}/${s.host.hits}/${s.disk.hits}, misses ${s.misses}; peak RSS growth ${growth.toFixed(0)} MB`,
    );
    // Capacities are a few MB; workers, LMDB's map and the V8 heap add a bounded overhead.
    expect(growth).toBeLessThan((caps.device + caps.host) / 1e6 + 400);
  });
});
