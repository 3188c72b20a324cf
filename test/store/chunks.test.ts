/**
 * Sessions as chains of encoded chunks: equal prefixes are stored once across sessions (put with
 * token ids), a grown session encodes only its new chunks, references are counted exactly in
 * the host tier and on disk (across restarts), a damaged chunk is a miss for every session using
 * it, and a directory of the first layout (one blob per session) still opens.
 */
import { open as openLmdb } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { KvStore, type KvCache } from '../../src/index.js';
import { planChain } from '../../src/store/chain.js';
import { mulberry32 } from '../helpers/synthetic.js';
import { codecRoundTrip, sameBits, session, storeKit, tempDir, testProfile } from '../helpers/store.js';
import { tokenBitsEqual } from '../helpers/metrics.js';

const { defer, openStore } = storeKit();
const CHUNK = 8; // the test profile keeps 2 sinks and a window of 8
const ids = (n: number, seed = 1) => Int32Array.from({ length: n }, (_, i) => (i * 7 + seed * 13) % 500);

/** Tokens [0, n) of `a` followed by tokens [n, b.tokens) of `b`: a session sharing a's first n tokens. */
function joined(a: KvCache, b: KvCache, n: number): KvCache {
  const row = (a.keys[0] as Float32Array).length / a.tokens;
  const cat = (x: ArrayBufferView, y: ArrayBufferView) => {
    const out = new Float32Array(b.tokens * row);
    out.set((x as Float32Array).subarray(0, n * row));
    out.set((y as Float32Array).subarray(n * row), n * row);
    return out;
  };
  return { layout: { ...a.layout }, tokens: b.tokens, keys: a.keys.map((k, l) => cat(k, b.keys[l]!)), values: a.values.map((v, l) => cat(v, b.values[l]!)) };
}

/** Token ids of a session sharing the first n ids of `base`. */
function joinedIds(base: Int32Array, own: Int32Array, n: number): Int32Array {
  const out = new Int32Array(own);
  out.set(base.subarray(0, n));
  return out;
}



/**
 * A restore whose rows are each the codec's (want) or, in `copied` rows at most, the raw cache's
 * (a chunk copied from a hot session with the same prefix).
 */
function rowsDecodedOrCopied(got: KvCache, s: { cache: KvCache; want: KvCache }, copied: number): boolean {
  if (got.tokens !== s.want.tokens) return false;
  let raw = 0;
  for (let t = 0; t < got.tokens; t++) {
    if (tokenBitsEqual(got, s.want, t)) continue;
    if (!tokenBitsEqual(got, s.cache, t)) return false;
    raw++;
  }
  return raw <= copied;
}

/** Full chunks of a session of n tokens in this file's setup. */
const fullChunks = (n: number) => planChain(n, CHUNK, 2, 8).chunks.length;

describe('shared prefixes', () => {
  it('a restore copies the chunks a hot session holds with the same prefix, positions and namespace instead of decoding them', async () => {
    const store = await openStore({ chunkTokens: CHUNK });
    const a = session(1, 64);
    const b = joined(a, session(2, 64), 44); // 5 whole chunks shared (40 tokens)
    const aIds = ids(64);
    const bIds = joinedIds(aIds, ids(64, 2), 44);
    await store.put('a', a, { tokens: aIds });
    await store.put('b', b, { tokens: bIds });
    await store.evict('b', { to: 'host' });
    const want = await codecRoundTrip(b);
    const restore = async () => {
      const c0 = store.stats().codec;
      const got = (await store.get('b', { promote: false }))!;
      const c1 = store.stats().codec;
      return { got, copied: c1.copiedTokens - c0.copiedTokens, decoded: c1.decodedTokens - c0.decodedTokens };
    };
    // 'a' is hot: b's 5 shared chunks are a's raw rows, the rest decoded.
    let r = await restore();
    expect(r).toMatchObject({ copied: 40, decoded: 64 - 40 });
    for (let t = 0; t < 64; t++) expect(tokenBitsEqual(r.got, t < 40 ? b : want, t), `row ${t}`).toBe(true);
    // The same token ids at other positions, or in another namespace, hold other chunks: nothing
    // is copied from them (their prefix-index entries match b's ids, their chunk keys do not).
    await store.evict('a', { to: 'host' });
    const shifted = { ...a, positions: Int32Array.from({ length: 64 }, (_, i) => i + 100) };
    await store.put('shifted', shifted, { tokens: aIds });
    await store.put('tenant', a, { tokens: aIds, namespace: 'other' });
    r = await restore();
    expect(r).toMatchObject({ copied: 0, decoded: 64 });
    expect(sameBits(r.got, want)).toBe(true);
    // Hot again: copied again.
    await store.get('a');
    expect(store.has('a')).toBe('device');
    r = await restore();
    expect(r.copied).toBe(40);
  });

  it('are stored once across sessions; divergence inside a chunk shares only the chunks before it', async () => {
    const store = await openStore({ chunkTokens: CHUNK });
    const a = session(1, 64);
    const b = joined(a, session(2, 64), 44); // shares 44 tokens: 5 whole chunks, diverges inside the 6th
    const aIds = ids(64);
    const bIds = joinedIds(aIds, ids(64, 2), 44);
    await store.put('a', a, { tokens: aIds });
    await store.put('b', b, { tokens: bIds });
    await store.evict('a');
    await store.evict('b');
    const st = store.stats();
    expect(fullChunks(64)).toBe(7);
    expect(st.chunks.refs).toBe(14);
    expect(st.chunks.count).toBe(14 - 5); // 5 shared chunks held once
    expect(st.chunks.bytesSaved).toBeGreaterThan(0);
    // Each session alone would take more than both together minus the shared part.
    const alone = async (id: string, c: KvCache, tokens: Int32Array) => {
      const solo = await openStore({ chunkTokens: CHUNK });
      await solo.put(id, c, { tokens });
      await solo.evict(id);
      return solo.stats().host.storedBytes;
    };
    const apart = (await alone('a', a, aIds)) + (await alone('b', b, bIds));
    expect(st.host.storedBytes).toBe(apart - st.chunks.bytesSaved);
    // Both restore exactly what the codec gives for each session encoded whole.
    expect(sameBits((await store.get('a', { promote: false }))!, await codecRoundTrip(a))).toBe(true);
    expect(sameBits((await store.get('b', { promote: false }))!, await codecRoundTrip(b))).toBe(true);
  });

  it('deleting one sharer keeps the others intact; a chunk goes with its last reference', async () => {
    const store = await openStore({ chunkTokens: CHUNK });
    const { arenaStats } = await import('../../src/store/host-block.js');
    const before = arenaStats().blocks;
    const a = session(3, 64);
    const b = joined(a, session(4, 64), 40);
    await store.put('a', a, { tokens: ids(64) });
    await store.put('b', b, { tokens: joinedIds(ids(64), ids(64, 3), 40) });
    await store.evict('a');
    await store.evict('b');
    expect(store.stats().chunks).toMatchObject({ count: 9, refs: 14 });
    await store.delete('a');
    expect(store.stats().chunks).toMatchObject({ count: 7, refs: 7, bytesSaved: 0 });
    expect(sameBits((await store.get('b', { promote: false }))!, await codecRoundTrip(b))).toBe(true);
    await store.delete('b');
    expect(store.stats().chunks).toMatchObject({ count: 0, refs: 0 });
    expect(arenaStats().blocks).toBe(before);
  });

  it('on disk: counted once, across a restart, freed with the last manifest', async () => {
    const t = await tempDir();
    defer(t.cleanup);
    const profile = await testProfile();
    const a = session(5, 64);
    const b = joined(a, session(6, 64), 48);
    let store = await KvStore.open({ profile, path: t.path, chunkTokens: CHUNK });
    await store.put('a', a, { tokens: ids(64) });
    await store.put('b', b, { tokens: joinedIds(ids(64), ids(64, 5), 48) });
    await store.evict('a', { to: 'disk' });
    await store.evict('b', { to: 'disk' });
    const onDisk = store.stats().chunks;
    expect(onDisk).toMatchObject({ count: 8, refs: 14 });
    await store.close();
    store = await KvStore.open({ profile, path: t.path, chunkTokens: CHUNK });
    defer(() => store.close());
    expect(store.stats().chunks).toEqual(onDisk);
    expect(sameBits((await store.get('a', { promote: false }))!, await codecRoundTrip(a))).toBe(true);
    await store.delete('a');
    expect(store.stats().chunks).toMatchObject({ count: 7, refs: 7 });
    expect(sameBits((await store.get('b', { promote: false }))!, await codecRoundTrip(b))).toBe(true);
    expect(store.stats().disk.storedBytes).toBeGreaterThan(0);
  });
});

describe('growing sessions', () => {
  for (const withTokens of [true, false]) {
    it(`encode only their new chunks and tail when put again (${withTokens ? 'token ids' : 'content keys'})`, async () => {
      const store = await openStore({ chunkTokens: CHUNK });
      const full = session(7, 160);
      const fullIds = ids(160);
      const turn = (n: number) => {
        const c = joined(full, full, n);
        const row = (c.keys[0] as Float32Array).length / c.tokens;
        const cut = { ...c, tokens: n, keys: c.keys.map((k) => (k as Float32Array).slice(0, n * row)), values: c.values.map((v) => (v as Float32Array).slice(0, n * row)) };
        return cut;
      };
      let prev = 0;
      for (const n of [64, 96, 130, 160]) {
        const before = store.stats().codec.encodedTokens;
        await store.put('s', turn(n), withTokens ? { tokens: fullIds.subarray(0, n) } : {});
        await store.evict('s', { to: n % 2 === 0 ? 'host' : 'disk' });
        const encoded = store.stats().codec.encodedTokens - before;
        const oldChainEnd = prev === 0 ? 0 : fullChunks(prev) * CHUNK;
        expect(encoded).toBe(n - oldChainEnd); // the new chunks and the tail, nothing before
        expect(encoded).toBeLessThanOrEqual(n - prev + CHUNK + 8); // appended + chunkTokens + window
        expect(sameBits((await store.get('s', { promote: false }))!, await codecRoundTrip(turn(n)))).toBe(true);
        prev = n;
      }
      // A clean demotion encodes nothing.
      await store.get('s');
      const before = store.stats().codec.encodedTokens;
      await store.evict('s');
      expect(store.stats().codec.encodedTokens).toBe(before);
    });
  }

  it('a changed chunk of a content-keyed session is encoded again, never reused', async () => {
    const store = await openStore({ chunkTokens: CHUNK });
    const a = session(8, 64);
    await store.put('s', a);
    await store.evict('s');
    const changed = joined(a, a, 64);
    (changed.keys[1] as Float32Array)[20 * 64 + 3]! += 0.5; // token 20: inside chunk 2
    const before = store.stats().codec.encodedTokens;
    await store.put('s', changed);
    await store.evict('s');
    expect(store.stats().codec.encodedTokens - before).toBe(CHUNK + 8); // chunk 2 and the tail; the other chunks reused
    expect(sameBits((await store.get('s', { promote: false }))!, await codecRoundTrip(changed))).toBe(true);
  });
});

describe('damaged chunks', () => {
  it('make every session using them a miss with a corrupt event, never a wrong cache', async () => {
    const t = await tempDir();
    defer(t.cleanup);
    const profile = await testProfile();
    const a = session(9, 64);
    const b = joined(a, session(10, 64), 40);
    const c = session(11, 64);
    let store = await KvStore.open({ profile, path: t.path, chunkTokens: CHUNK });
    await store.put('a', a, { tokens: ids(64) });
    await store.put('b', b, { tokens: joinedIds(ids(64), ids(64, 9), 40) });
    await store.put('c', c, { tokens: ids(64, 11) });
    for (const id of ['a', 'b', 'c']) await store.evict(id, { to: 'disk' });
    await store.close();
    // Flip a byte in the middle of the shared first chunk (the chunk both manifests name first).
    const env = openLmdb<Uint8Array, Uint8Array>({ path: t.path, noSubdir: false, maxDbs: 8 });
    const meta = env.openDB<Uint8Array, Uint8Array>('meta', { encoding: 'binary', keyEncoding: 'binary' });
    const chunks = env.openDB<Uint8Array, Uint8Array>('chunks', { encoding: 'binary', keyEncoding: 'binary' });
    const firstChunk = (id: string) => {
      const raw = meta.getBinary(Buffer.from(id))!;
      return (JSON.parse(Buffer.from(raw).subarray(5).toString()) as { chunks: { keys: string } }).chunks.keys.slice(0, 32);
    };
    const shared = firstChunk('a');
    expect(firstChunk('b')).toBe(shared);
    const bytes = Buffer.from(chunks.getBinary(Buffer.from(shared, 'hex'))!);
    bytes[bytes.length >> 1]! ^= 0x5a;
    await chunks.put(Buffer.from(shared, 'hex'), bytes);
    await env.close();

    store = await KvStore.open({ profile, path: t.path, chunkTokens: CHUNK });
    defer(() => store.close());
    const corrupt: string[] = [];
    store.on('corrupt', (e) => corrupt.push(e.id));
    const status = {};
    expect(await store.get('a', { status })).toBeUndefined();
    expect(status).toMatchObject({ result: 'miss', reason: 'corrupt' });
    expect(await store.get('b')).toBeUndefined();
    expect(corrupt).toEqual(['a', 'b']);
    expect(sameBits((await store.get('c', { promote: false }))!, await codecRoundTrip(c))).toBe(true);
    // The damaged chunk went with its last reference; the same prefix can be stored again.
    expect(store.stats().chunks).toMatchObject({ count: fullChunks(64), refs: fullChunks(64) });
    await store.put('a', a, { tokens: ids(64) });
    await store.evict('a', { to: 'disk' });
    expect(sameBits((await store.get('a', { promote: false }))!, await codecRoundTrip(a))).toBe(true);
  });
});

describe('unreferenced chunks', () => {
  it('left on disk (a process killed while holding them) are removed after open', async () => {
    const t = await tempDir();
    defer(t.cleanup);
    const profile = await testProfile();
    let store = await KvStore.open({ profile, path: t.path, chunkTokens: CHUNK });
    await store.put('a', session(13, 64), { tokens: ids(64) });
    await store.evict('a', { to: 'disk' });
    await store.close();
    const env = openLmdb<Uint8Array, Uint8Array>({ path: t.path, noSubdir: false, maxDbs: 8 });
    const chunks = env.openDB<Uint8Array, Uint8Array>('chunks', { encoding: 'binary', keyEncoding: 'binary' });
    const orphan = Buffer.alloc(16, 0xab);
    await chunks.put(orphan, Buffer.from('no manifest names me'));
    await env.close();
    store = await KvStore.open({ profile, path: t.path, chunkTokens: CHUNK });
    expect(store.stats().chunks.count).toBe(fullChunks(64)); // never counted
    await store.close(); // waits for the background removal
    const env2 = openLmdb<Uint8Array, Uint8Array>({ path: t.path, noSubdir: false, maxDbs: 8 });
    const chunks2 = env2.openDB<Uint8Array, Uint8Array>('chunks', { encoding: 'binary', keyEncoding: 'binary' });
    expect(chunks2.getBinary(orphan)).toBeUndefined();
    expect([...chunks2.getKeys({})].length).toBe(fullChunks(64));
    await env2.close();
  });
});

describe('the first layout', () => {
  it('a directory written one blob per session (record version 1) opens; its sessions restore exactly', async () => {
    const t = await tempDir();
    defer(t.cleanup);
    const profile = await testProfile();
    const a = session(12, 64);
    let store = await KvStore.open({ profile, path: t.path, blobPerSession: true });
    await store.put('old', a, { tokens: ids(64) });
    await store.evict('old', { to: 'disk' });
    await store.close();
    // Rewrite the record as the first version framed it (version byte 1; it had no chunks field).
    const env = openLmdb<Uint8Array, Uint8Array>({ path: t.path, noSubdir: false, maxDbs: 8 });
    const meta = env.openDB<Uint8Array, Uint8Array>('meta', { encoding: 'binary', keyEncoding: 'binary' });
    const raw = Buffer.from(meta.getBinary(Buffer.from('old'))!);
    expect(raw[0]).toBe(2);
    expect(JSON.parse(raw.subarray(5).toString())).not.toHaveProperty('chunks');
    raw[0] = 1;
    await meta.put(Buffer.from('old'), raw);
    await env.close();
    store = await KvStore.open({ profile, path: t.path, chunkTokens: CHUNK });
    defer(() => store.close());
    expect(store.has('old')).toBe('disk');
    expect(sameBits((await store.get('old'))!, await codecRoundTrip(a))).toBe(true);
    expect(await store.matchPrefix(ids(64))).toBe(64);
    // Demoted again it is clean: nothing is encoded; put again it is chunked.
    const before = store.stats().codec.encodedTokens;
    await store.evict('old');
    expect(store.stats().codec.encodedTokens).toBe(before);
    await store.put('old', a, { tokens: ids(64) });
    await store.evict('old');
    expect(store.stats().chunks.refs).toBe(fullChunks(64));
  });
});

describe('random operations over shared chunks', () => {
  it('keep references equal to the manifests, has() in agreement with get(), every hit exact', async () => {
    const rand = mulberry32(20261201);
    const store = await openStore({
      chunkTokens: CHUNK,
      tiers: { device: { capacityBytes: 3 * 64 * 256, idleMs: 0 }, host: { capacityBytes: 40_000, idleMs: 0 }, disk: { capacityBytes: 400_000 } },
    });
    const prompts = [session(20, 64), session(21, 64)];
    const promptIds = [ids(64, 20), ids(64, 21)];
    const live = new Map<string, { cache: KvCache; want: KvCache }>();
    for (let step = 0; step < 60; step++) {
      const id = `s${Math.floor(rand() * 8)}`;
      const op = rand();
      if (op < 0.45) {
        const p = Math.floor(rand() * 2);
        const shared = 8 + Math.floor(rand() * 48);
        const n = shared + 8 + Math.floor(rand() * 40);
        const own = session(100 + step, n);
        const cache = joined(prompts[p]!, own, shared);
        await store.put(id, cache, { tokens: joinedIds(promptIds[p]!, ids(n, 100 + step), shared) });
        live.set(id, { cache, want: await codecRoundTrip(cache) });
      } else if (op < 0.65) {
        await store.evict(id, { to: rand() < 0.5 ? 'host' : 'disk' });
      } else if (op < 0.75) {
        await store.delete(id);
        live.delete(id);
      } else {
        const copied0 = store.stats().codec.copiedTokens;
        const entry = await store.getEntry(id, { promote: rand() < 0.5 });
        const got = entry?.cache;
        const tier = store.has(id);
        // A hot hit is the raw cache itself; a lower one what the codec gives for it, except the
        // chunks copied from a hot session holding the same prefix: those are its raw rows.
        if (got && entry.tier === 'device') expect(sameBits(got, live.get(id)!.cache), `${id} at step ${step}`).toBe(true);
        else if (got) expect(rowsDecodedOrCopied(got, live.get(id)!, store.stats().codec.copiedTokens - copied0), `${id} at step ${step}`).toBe(true);
        else live.delete(id); // evicted by capacity
        expect(tier === undefined).toBe(got === undefined);
      }
      await store.settled();
      for (const [lid] of live) if (store.has(lid) === undefined) live.delete(lid);
      const st = store.stats();
      expect(st.host.storedBytes).toBeLessThanOrEqual(40_000 + 64 * 1024);
      expect(st.chunks.count).toBeLessThanOrEqual(st.chunks.refs + 64);
    }
    // Everything still held restores exactly; on disk alone, the references are the manifests'.
    for (const [id] of live) await store.evict(id, { to: 'disk' });
    for (const [id, { want }] of live) expect(sameBits((await store.get(id, { promote: false }))!, want), id).toBe(true);
    for (const [id] of live) await store.evict(id, { to: 'disk' }); // a host copy of a clean session goes too
    await store.settled();
    const refs = [...live.values()].reduce((n, s) => n + fullChunks(s.cache.tokens), 0);
    expect(store.stats().chunks.refs).toBe(refs);
    expect(store.stats().chunks.count).toBeLessThan(refs);
  });
});
