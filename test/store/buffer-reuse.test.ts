/**
 * The hot tier's copies live in recycled buffers (buffer-pool.ts). These tests run gets, puts
 * and evictions of a few sessions concurrently with recycled buffers poisoned (filled with NaN
 * when they go back to the pool): a buffer reused or poisoned while a caller's copy, an encode or
 * a restore still reads it would show up as a cache that matches no version of its session.
 */
import { describe, expect, it } from 'vitest';
import type { KvCache, StoreEvent } from '../../src/index.js';
import { bufferPool } from '../../src/internal/testing.js';
import { LAYOUT, storeKit } from '../helpers/store.js';
import { mulberry32 } from '../helpers/synthetic.js';

const { openStore } = storeKit();

const ROW = LAYOUT.kvHeads * LAYOUT.headDim;
const TOKENS = 6000; // 1.5 MB per session: copies take long enough to overlap other operations

/** Session `id` at `version`: every value says which (id, version, stream, layer) it belongs to. */
function stamped(id: number, version: number, tokens = TOKENS): KvCache {
  const arr = (s: number, l: number) => new Float32Array(tokens * ROW).fill(id * 100_000 + version * 8 + s * 4 + l);
  return {
    layout: LAYOUT,
    tokens,
    keys: Array.from({ length: LAYOUT.layers }, (_, l) => arr(0, l)),
    values: Array.from({ length: LAYOUT.layers }, (_, l) => arr(1, l)),
  };
}

/** The version a restored cache is, if all of it is that one version of session `id` (else -1). */
function versionOf(c: KvCache, id: number): number {
  if (c.tokens !== TOKENS) return -1;
  const v = ((c.keys[0] as Float32Array)[0]! - id * 100_000) / 8;
  if (!Number.isInteger(v) || v < 0) return -1;
  for (let s = 0; s < 2; s++) {
    for (let l = 0; l < LAYOUT.layers; l++) {
      const want = id * 100_000 + v * 8 + s * 4 + l;
      const a = (s === 0 ? c.keys : c.values)[l] as Float32Array;
      for (let i = 0; i < a.length; i++) if (a[i] !== want) return -1;
    }
  }
  for (let t = 0; t < TOKENS; t++) if (c.positions![t] !== t) return -1;
  return v;
}

describe('recycled hot-tier buffers', () => {
  for (const compression of ['none', 'kvtc'] as const) {
    it(`concurrent gets, puts and evictions never see a recycled buffer (${compression})`, async () => {
      const bytes = 2 * LAYOUT.layers * TOKENS * ROW * 4;
      const store = await openStore({
        compression,
        workers: { minThreads: 1, maxThreads: 2 },
        tiers: { device: { capacityBytes: Math.floor(3.5 * bytes), idleMs: 0 }, host: { capacityBytes: 3 * bytes, idleMs: 0 } },
        flushOnClose: false,
      });
      const pool = bufferPool(store);
      pool.poison = true;
      const errors: StoreEvent[] = [];
      store.on('error', (e) => errors.push(e));
      const IDS = 6;
      /** Versions put per id (issued), and the last one whose put resolved. */
      const issued = new Array<number>(IDS).fill(0);
      const landed = new Array<number>(IDS).fill(0);
      for (let i = 0; i < IDS; i++) await store.put(`s${i}`, stamped(i, 0));
      const rand = mulberry32(compression === 'none' ? 5 : 6);
      const bad: string[] = [];
      const check = (got: KvCache | undefined, i: number, floor: number) => {
        if (!got) return bad.push(`s${i}: a miss`);
        const v = versionOf(got, i);
        // kvtc: the middle tokens are lossy; the sinks and the recent window are exact, and a
        // poisoned or foreign buffer shows there as well.
        if (compression === 'kvtc') return;
        if (v < floor || v > issued[i]!) bad.push(`s${i}: got version ${v}, expected ${floor}..${issued[i]}`);
      };
      const exactEnds = (got: KvCache | undefined, i: number) => {
        if (!got || compression !== 'kvtc') return;
        const v = ((got.keys[0] as Float32Array)[0]! - i * 100_000) / 8;
        const keys = got.keys[1] as Float32Array;
        const want = i * 100_000 + v * 8 + 1;
        // The first and last tokens (sinks, window) of layer 1's keys.
        for (const idx of [0, 1, ROW - 1, keys.length - 1, keys.length - ROW]) if (keys[idx] !== want) bad.push(`s${i}: sink/window value ${keys[idx]} != ${want}`);
        if (!Number.isInteger(v) || v < 0 || v > issued[i]!) bad.push(`s${i}: sink value says version ${v}`);
      };
      const client = async (ops: number) => {
        for (let k = 0; k < ops; k++) {
          const i = Math.floor(rand() * IDS);
          const r = rand();
          if (r < 0.55) {
            const floor = landed[i]!;
            const got = await store.get(`s${i}`);
            check(got, i, floor);
            exactEnds(got, i);
          } else if (r < 0.9) {
            const v = ++issued[i]!;
            await store.put(`s${i}`, stamped(i, v));
            landed[i] = Math.max(landed[i]!, v);
          } else {
            await store.evict(`s${i}`, { to: rand() < 0.5 ? 'host' : 'disk' });
          }
        }
      };
      // Each client also fires a get and a put of one id in the same tick now and then: the put's
      // lane work (dropping the old hot copy) runs while the get's copy of it is in flight.
      const racer = async (rounds: number) => {
        for (let k = 0; k < rounds; k++) {
          const i = Math.floor(rand() * IDS);
          const floor = landed[i]!;
          const v = ++issued[i]!;
          const [got] = await Promise.all([store.get(`s${i}`), store.put(`s${i}`, stamped(i, v)), store.put(`s${(i + 1) % IDS}`, stamped((i + 1) % IDS, ++issued[(i + 1) % IDS]!))]);
          landed[i] = Math.max(landed[i]!, v);
          landed[(i + 1) % IDS] = Math.max(landed[(i + 1) % IDS]!, issued[(i + 1) % IDS]!);
          check(got, i, floor);
          exactEnds(got, i);
        }
      };
      await Promise.all([client(60), client(60), racer(50), racer(50), racer(50)]);
      await store.settled();
      for (let i = 0; i < IDS; i++) {
        const got = await store.get(`s${i}`);
        check(got, i, issued[i]!);
        exactEnds(got, i);
      }
      expect(bad).toEqual([]);
      expect(errors).toEqual([]);
      // The pool was exercised: buffers came back and were handed out again.
      expect(pool.counts.recycled).toBeGreaterThan(10);
      expect(pool.counts.reused).toBeGreaterThan(10);
    });
  }

  it('a restore copying chunks from a hot session holds its buffer: dropping that session mid-copy changes nothing', async () => {
    const store = await openStore({ chunkTokens: 256, workers: { minThreads: 1, maxThreads: 2 }, flushOnClose: false });
    const pool = bufferPool(store);
    pool.poison = true;
    const BIG = 60_000; // 31 MB: a copy long enough to overlap the drop
    const ids = Int32Array.from({ length: BIG }, (_, t) => t % 1000);
    let caught = 0;
    for (let round = 0; round < 6; round++) {
      // 'b' has a's token ids and rows: every full chunk of it is one 'a' holds (hot).
      await store.put('a', stamped(1, round, BIG), { tokens: ids });
      await store.put('b', stamped(1, round, BIG), { tokens: ids });
      await store.evict('b', { to: 'host' });
      const copied0 = store.stats().codec.copiedTokens;
      const got = store.get('b', { promote: false });
      // As soon as the copy has started (counted when it is handed to the addon's threads), drop
      // 'a' and put another session of its size: without the hold, a's buffer would go back to the
      // pool (poisoned: NaN) and be written with c's values while the copy still reads it.
      let dropped = false;
      const watch = (async () => {
        while (!dropped) {
          if (store.stats().codec.copiedTokens > copied0) {
            dropped = true;
            caught++;
            await Promise.all([store.delete('a'), store.put('c', stamped(2, round, BIG))]);
          }
          await new Promise((r) => setImmediate(r));
        }
      })();
      const cache = (await got)!;
      dropped = true;
      await watch;
      expect(store.stats().codec.copiedTokens - copied0).toBeGreaterThan(0);
      // The copied rows are a's exactly (the decoded ones are close to it).
      for (let l = 0; l < LAYOUT.layers; l++) {
        const keys = cache.keys[l] as Float32Array;
        const want = 1 * 100_000 + round * 8 + l;
        for (let i = 0; i < 40_000 * ROW; i += 97) if (keys[i] !== want) throw new Error(`round ${round}: key ${i} of layer ${l} is ${keys[i]}, not ${want}`);
      }
      await store.delete('b');
      await store.delete('c');
    }
    expect(caught).toBeGreaterThan(0);
  });

  it('a restore copied into the caller\'s cache gives its buffer back: repeated gets allocate none; one handed out is not recycled', async () => {
    // Idle pooled buffers may take half the device budget: room for one restore's.
    const store = await openStore({ compression: 'kvtc', tiers: { device: { capacityBytes: 10 << 20, idleMs: 60_000 } }, flushOnClose: false });
    const pool = bufferPool(store);
    pool.poison = true;
    await store.put('s', stamped(3, 1));
    await store.evict('s', { to: 'host' });
    expect(store.has('s')).toBe('host');
    const into = { layout: LAYOUT, tokens: TOKENS, keys: [0, 1].map(() => new Float32Array(TOKENS * ROW)), values: [0, 1].map(() => new Float32Array(TOKENS * ROW)) };
    await store.get('s', { into, promote: false });
    const allocated = pool.counts.allocated;
    for (let i = 0; i < 5; i++) {
      const got = (await store.get('s', { into, promote: false }))!;
      expect((got.keys[1] as Float32Array)[0]).toBe(300_000 + 8 + 1); // a sink: exact, never the poison
    }
    expect(pool.counts.allocated).toBe(allocated); // every restore reused the one before's buffer
    // Handed out as it is (no into, one caller): the caller's, never recycled or poisoned.
    const mine = (await store.get('s', { promote: false }))!;
    const before = (mine.keys[1] as Float32Array)[0];
    for (let i = 0; i < 3; i++) await store.get('s', { into, promote: false });
    expect((mine.keys[1] as Float32Array)[0]).toBe(before);
    expect(before).toBe(300_000 + 8 + 1);
  });

  it('a store whose device budget is below one session still reuses a restore\'s buffer (the idle budget has a 64 MiB floor)', async () => {
    // A 1 MB device budget against 1.5 MB sessions: half the budget could hold no idle buffer,
    // so every restore into the caller's cache took a fresh one (5 allocations for the 5 gets).
    const store = await openStore({ compression: 'kvtc', tiers: { device: { capacityBytes: 1 << 20, idleMs: 60_000 } }, flushOnClose: false });
    const pool = bufferPool(store);
    await store.put('s', stamped(4, 1));
    await store.evict('s', { to: 'host' });
    const into = { layout: LAYOUT, tokens: TOKENS, keys: [0, 1].map(() => new Float32Array(TOKENS * ROW)), values: [0, 1].map(() => new Float32Array(TOKENS * ROW)) };
    await store.get('s', { into, promote: false });
    const allocated = pool.counts.allocated;
    for (let i = 0; i < 5; i++) await store.get('s', { into, promote: false });
    expect(pool.counts.allocated).toBe(allocated);
    expect(pool.idleBytes).toBeGreaterThan(1 << 20);
  });
});
