/**
 * Concurrency and memory under stress: thousands of random operations over hundreds of sessions
 * with tiny capacities and several workers (the loop and its invariants: helpers/stress.ts).
 * After every step the host tier's native memory also equals its accounting; closing the store
 * releases it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvStore, encode, type CodecProfile } from '../../src/index.js';
import { native } from '../../src/binding.js';
import { session, sessionBytes, tempDir, testProfile } from '../helpers/store.js';
import { runStress } from '../helpers/stress.js';

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
    let maxRss = 0;
    const { done } = await runStress(store, {
      ops: OPS,
      ids: IDS,
      parallel: PARALLEL,
      caps,
      check: () => {
        expect(native.arenaStats().bytes - arenaBefore).toBe(store.stats().host.storedBytes - store.stats().host.overheadBytes);
        maxRss = Math.max(maxRss, process.memoryUsage().rss);
      },
    });
    const s = store.stats();
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
