/**
 * Prefix lookup: sessions put with token ids are found by the longest prefix they share with a
 * query — at least one chunk of it, extended token by token — within one namespace, across tiers
 * and restarts.
 */
import { describe, expect, it } from 'vitest';
import { KvStore, type KvCache } from '../../src/index.js';
import { tokenBitsEqual } from '../helpers/metrics.js';
import { session, storeKit, tempDir, testProfile } from '../helpers/store.js';

const { defer, openStore } = storeKit();
const CHUNK = 8;
const ids = (n: number, seed = 1) => Int32Array.from({ length: n }, (_, i) => (i * 7 + seed * 13) % 500);

/** Tokens [0, n) of a and b are bit-identical. */
function samePrefix(a: KvCache, b: KvCache, n: number): boolean {
  for (let t = 0; t < n; t++) if (!tokenBitsEqual(a, b, t)) return false;
  return true;
}

describe('matchPrefix / getPrefix', () => {
  it('full and partial matches, divergence inside a chunk, nothing below one chunk', async () => {
    const store = await openStore({ chunkTokens: CHUNK });
    const a = session(1, 40);
    await store.put('a', a, { tokens: ids(40) });
    expect(await store.matchPrefix(ids(40))).toBe(40);
    expect(await store.matchPrefix(ids(25))).toBe(25); // a query shorter than the session
    const longer = Int32Array.from([...ids(40), 1, 2, 3]);
    expect(await store.matchPrefix(longer)).toBe(40); // the session is a prefix of the query
    const diverged = ids(40);
    diverged[19] = 499; // inside the third chunk
    expect(await store.matchPrefix(diverged)).toBe(19);
    const early = ids(40);
    early[5] = 498; // inside the first chunk: less than one chunk shared
    expect(await store.matchPrefix(early)).toBe(0);
    expect(await store.matchPrefix(ids(40, 2))).toBe(0);

    const got = await store.getPrefix(diverged);
    expect(got?.cache.tokens).toBe(19);
    expect(got?.tier).toBe('device');
    expect(got?.from).toBe('a');
    expect(Array.from(got!.cache.positions!)).toEqual(Array.from({ length: 19 }, (_, i) => i));
    expect(samePrefix(got!.cache, a, 19)).toBe(true);
    expect(await store.getPrefix(early)).toBeUndefined();
  });

  it('the longest holder wins; namespaces never see each other', async () => {
    const store = await openStore({ chunkTokens: CHUNK });
    await store.put('short', session(1, 16), { tokens: ids(16) });
    await store.put('long', session(2, 48), { tokens: ids(48) });
    await store.put('tenant-b', session(3, 64), { tokens: ids(64), namespace: 'b' });
    expect(await store.matchPrefix(ids(64))).toBe(48);
    expect(await store.matchPrefix(ids(64), { namespace: 'b' })).toBe(64);
    expect(await store.matchPrefix(ids(64), { namespace: 'c' })).toBe(0);
    const got = await store.getPrefix(ids(30));
    expect(got?.cache.tokens).toBe(30);
  });

  it('prefixes are found from host and disk, and after a restart; delete forgets them', async () => {
    const t = await tempDir();
    defer(t.cleanup);
    const profile = await testProfile();
    const a = session(5, 64);
    const s1 = await KvStore.open({ profile, path: t.path, chunkTokens: CHUNK });
    await s1.put('a', a, { tokens: ids(64), namespace: 'n' });
    await s1.evict('a', { to: 'disk' });
    expect(await s1.matchPrefix(ids(64), { namespace: 'n' })).toBe(64);
    await s1.close();
    const s2 = await KvStore.open({ profile, path: t.path, chunkTokens: CHUNK });
    defer(() => s2.close());
    expect(await s2.matchPrefix(ids(64), { namespace: 'n' })).toBe(64);
    const got = await s2.getPrefix(ids(20), { namespace: 'n', promote: false });
    expect(got?.tier).toBe('disk');
    expect(got?.cache.tokens).toBe(20);
    expect(tokenBitsEqual(got!.cache, a, 0)).toBe(true); // sinks are lossless
    await s2.delete('a');
    expect(await s2.matchPrefix(ids(64), { namespace: 'n' })).toBe(0);
  });

  it('a session put again with other tokens is re-indexed; one put without tokens is not indexed', async () => {
    const store = await openStore({ chunkTokens: CHUNK });
    await store.put('x', session(1, 32), { tokens: ids(32) });
    await store.put('x', session(2, 32), { tokens: ids(32, 3) });
    expect(await store.matchPrefix(ids(32))).toBe(0);
    expect(await store.matchPrefix(ids(32, 3))).toBe(32);
    await store.put('x', session(3, 32));
    expect(await store.matchPrefix(ids(32, 3))).toBe(0);
  });

  it('bad token ids are refused', async () => {
    const store = await openStore({ chunkTokens: CHUNK });
    await expect(store.put('x', session(1, 16), { tokens: ids(15) })).rejects.toMatchObject({ code: 'E_LAYOUT' });
    await expect(store.put('x', session(1, 16), { tokens: [1.5, ...ids(15)] })).rejects.toMatchObject({ code: 'E_OPTIONS' });
    await expect(store.put('x', session(1, 16), { tokens: 'abc' as never })).rejects.toMatchObject({ code: 'E_OPTIONS' });
    await expect(store.matchPrefix([-1])).rejects.toMatchObject({ code: 'E_OPTIONS' });
    await expect(store.matchPrefix(ids(8), { namespace: 5 as never })).rejects.toMatchObject({ code: 'E_OPTIONS' });
    await expect(store.matchPrefix(ids(8), { tenant: 'a' } as never)).rejects.toMatchObject({ code: 'E_OPTIONS' });
    expect(store.has('x')).toBeUndefined();
  });
});
