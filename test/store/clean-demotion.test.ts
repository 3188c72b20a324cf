/**
 * A restored session that has not changed keeps its encoded copy: demoting it again encodes
 * nothing (stats().codec counts every token through the codec), wherever that copy is; and a get
 * does not wait for the demotions its promotion causes.
 */
import { describe, expect, it } from 'vitest';
import { session, storeKit } from '../helpers/store.js';

const { openStore } = storeKit();

describe('clean demotion', () => {
  it('host hit, then demotion: the blob is reused, no token is encoded again', async () => {
    const store = await openStore();
    await store.put('a', session(1, 200));
    await store.evict('a');
    expect(store.stats().codec).toEqual({ encodedTokens: 200, decodedTokens: 0, copiedTokens: 0 });
    const first = await store.get('a');
    expect(store.has('a')).toBe('device');
    expect(store.stats().host.entries).toBe(1); // the encoded copy stays below the hot one
    expect(await store.evict('a')).toBe('host');
    expect(store.stats().codec).toEqual({ encodedTokens: 200, decodedTokens: 200, copiedTokens: 0 });
    // Still the same session afterwards.
    const again = await store.get('a');
    expect(again!.keys[1]).toEqual(first!.keys[1]);
    expect(await store.evict('a', { to: 'disk' })).toBe('disk');
    expect(store.stats().host.entries).toBe(0);
    expect(store.stats().codec.encodedTokens).toBe(200);
  });

  it('disk hit, then demotion to host: the record is read back, not re-encoded', async () => {
    const store = await openStore();
    await store.put('d', session(2, 120));
    await store.evict('d', { to: 'disk' });
    await store.get('d');
    expect(await store.evict('d')).toBe('host');
    expect(store.stats().codec).toEqual({ encodedTokens: 120, decodedTokens: 120, copiedTokens: 0 });
    await store.get('d');
    expect(await store.evict('d', { to: 'disk' })).toBe('disk');
    expect(store.stats().codec.encodedTokens).toBe(120);
  });

  it('a put makes the session dirty again: its next demotion encodes it', async () => {
    const store = await openStore();
    await store.put('p', session(3, 64));
    await store.evict('p');
    await store.get('p');
    await store.put('p', session(4, 80));
    await store.evict('p');
    expect(store.stats().codec.encodedTokens).toBe(64 + 80);
    expect((await store.get('p'))!.tokens).toBe(80);
  });

  it('a shadow spilled by host capacity leaves the hot session clean on disk', async () => {
    const store = await openStore({ tiers: { host: { capacityBytes: 1 } } });
    await store.put('s', session(5, 64));
    await store.evict('s'); // spilled at once by host capacity
    expect(store.has('s')).toBe('disk');
    await store.get('s');
    expect(await store.evict('s', { to: 'disk' })).toBe('disk');
    expect(store.stats().codec.encodedTokens).toBe(64);
  });
});

describe('caller-visible restore cost', () => {
  it('a get resolves before the demotions its promotion causes', async () => {
    const store = await openStore({ tiers: { device: { capacityBytes: 1_050_000 } } }); // big fits alone, not with a
    await store.put('a', session(6, 64));
    await store.evict('a');
    await store.put('big', session(7, 2000)); // dirty: demoting it means encoding 2000 tokens
    const order: string[] = [];
    store.on('demote', (e) => order.push(`demote:${e.id}`));
    const got = store.get('a').then((c) => {
      order.push('get:a');
      return c;
    });
    expect((await got)?.tokens).toBe(64);
    await store.settled();
    expect(order).toEqual(['get:a', 'demote:big']);
    expect(store.has('big')).toBe('host');
  });
});

describe('explainable misses', () => {
  it("a miss says why: 'absent', 'evicted' (by disk capacity), 'expired' (TTL)", async () => {
    const { encode } = await import('../../src/index.js');
    const { testProfile } = await import('../helpers/store.js');
    const blob = (await encode(session(8, 100), await testProfile())).length;
    const store = await openStore({ tiers: { device: { capacityBytes: 0 }, host: { capacityBytes: 1 }, disk: { capacityBytes: Math.floor(blob * 1.5) } } });
    const reasons: (string | undefined)[] = [];
    store.on('miss', (e) => reasons.push(e.reason));
    await store.put('a', session(8, 100));
    await store.put('b', session(9, 100)); // pushes 'a' out of the disk tier
    await store.settled();
    const status = {};
    expect(await store.get('a', { status })).toBeUndefined();
    expect(status).toMatchObject({ result: 'miss', reason: 'evicted' });
    await store.put('t', session(10, 8), { ttlMs: 1 });
    await store.settled();
    await new Promise((r) => setTimeout(r, 5));
    expect(await store.get('t')).toBeUndefined();
    expect(await store.get('never')).toBeUndefined();
    expect(reasons).toEqual(['evicted', 'expired', 'absent']);
    await store.put('a', session(8, 100)); // a put forgets the old removal
    await store.delete('a');
    expect(await store.get('a')).toBeUndefined();
    expect(reasons.at(-1)).toBe('absent');
  });
});

describe('large restores', () => {
  it("borrow the pool's idle threads; small ones run on one", async () => {
    const { restoreThreads } = await import('../../src/internal/testing.js');
    const store = await openStore({ workers: { minThreads: 2, maxThreads: 2 } });
    const big = session(11, 16384); // 8 MiB raw
    await store.put('big', big);
    await store.put('small', session(12, 64));
    await store.evict('big');
    await store.evict('small');
    const got = await store.get('big');
    expect(got?.tokens).toBe(16384);
    expect(restoreThreads(store).at(-1)).toBe(2);
    await store.get('small');
    expect(restoreThreads(store).at(-1)).toBe(1);
    // The parallel decode gives the same cache as a single-threaded one.
    const { decode, encode } = await import('../../src/index.js');
    const { testProfile } = await import('../helpers/store.js');
    const one = await decode(await encode(big, await testProfile()), await testProfile());
    expect(Buffer.from((got!.keys[1] as Float32Array).buffer, (got!.keys[1] as Float32Array).byteOffset, got!.keys[1]!.byteLength))
      .toEqual(Buffer.from((one.keys[1] as Float32Array).buffer, (one.keys[1] as Float32Array).byteOffset, one.keys[1]!.byteLength));
  });
});
