/**
 * KvStore on the CUDA backend: the hot tier in store-owned device memory with exact accounting,
 * puts from host arrays and from device addresses, gets into host arrays or straight into a
 * caller's device buffers from every tier, GPU demotion and restore, device memory returned on
 * delete and close, and out-of-device-memory handled without losing the session.
 * Runs on the real GPU when one is usable, else on the CPU emulation (see target.ts).
 */
import { REAL_DEVICE, TARGET } from './target.js';
import { describe, expect, it } from 'vitest';
import { type KvCache, KvtcError, decode, deviceMemory, encode } from '../../src/index.js';
import { relMse, tokenBitsEqual } from '../helpers/metrics.js';
import { LAYOUT, session, sessionBytes, storeKit, testProfile } from '../helpers/store.js';
import { withDtype } from '../helpers/synthetic.js';

const { defer, openStore } = storeKit();

function bitsEqual(a: KvCache, b: KvCache): boolean {
  if (a.tokens !== b.tokens) return false;
  for (let t = 0; t < a.tokens; t++) if (!tokenBitsEqual(a, b, t)) return false;
  return Array.from(a.positions!).every((p, i) => p === b.positions![i]);
}

const LAYER_BYTES = (tokens: number) => tokens * LAYOUT.kvHeads * LAYOUT.headDim * 4;

/** Device buffers for a cache of LAYOUT, freed after the test. */
async function deviceBuffers(tokens: number): Promise<{ keys: bigint[]; values: bigint[] }> {
  const out = { keys: [] as bigint[], values: [] as bigint[] };
  for (let l = 0; l < LAYOUT.layers; l++) {
    for (const s of ['keys', 'values'] as const) {
      const a = await deviceMemory.alloc(LAYER_BYTES(tokens));
      defer(() => deviceMemory.free(a));
      out[s].push(a);
    }
  }
  return out;
}

async function download(buffers: { keys: bigint[]; values: bigint[] }, tokens: number, positions: Int32Array): Promise<KvCache> {
  const keys: Float32Array[] = [];
  const values: Float32Array[] = [];
  for (let l = 0; l < LAYOUT.layers; l++) {
    keys.push(new Float32Array(LAYER_BYTES(tokens) / 4));
    values.push(new Float32Array(LAYER_BYTES(tokens) / 4));
    await deviceMemory.download(keys[l]!, buffers.keys[l]!);
    await deviceMemory.download(values[l]!, buffers.values[l]!);
  }
  return { layout: LAYOUT, tokens, positions, keys, values };
}

describe(`KvStore on the cuda backend (${TARGET})`, () => {
  it('keeps hot sessions in device memory with exact accounting and returns it all', async () => {
    // The profile's constants go to the device once per process, at its first GPU encode.
    await encode(session(0), await testProfile(), { backend: 'cuda' });
    const before = (await deviceMemory.info()).free;
    const store = await openStore({ backend: 'cuda' });
    expect(store.backend).toBe('cuda');
    expect(store.stats().backend).toBe('cuda');
    const a = session(1);
    const b = session(2, 100);
    await store.put('a', a);
    await store.put('b', b);
    expect(store.has('a')).toBe('device');
    expect(store.stats().device.rawBytes).toBe(sessionBytes(64) + sessionBytes(100));
    // The emulated device counts bytes exactly; a real one rounds allocations up.
    if (!REAL_DEVICE) expect(before - (await deviceMemory.info()).free).toBe(sessionBytes(64) + sessionBytes(100));
    expect(bitsEqual((await store.get('a'))!, a)).toBe(true);
    expect(bitsEqual((await store.get('b'))!, b)).toBe(true);
    // Callers get their own copies.
    const copy = (await store.get('a'))!;
    (copy.keys[0] as Float32Array)[0] = 1e9;
    expect(bitsEqual((await store.get('a'))!, a)).toBe(true);
    await store.delete('a');
    if (!REAL_DEVICE) expect(before - (await deviceMemory.info()).free).toBe(sessionBytes(100));
    await store.close(); // flushes 'b' to disk with the GPU encoder, then frees its device copy
    if (!REAL_DEVICE) expect((await deviceMemory.info()).free).toBe(before);
  });

  it('demotes with the GPU encoder and restores with the GPU decoder, from host and disk', async () => {
    const profile = await testProfile();
    const store = await openStore({ backend: 'cuda' });
    const cache = session(3, 80);
    await store.put('s', cache);
    expect(await store.evict('s')).toBe('host');
    // The CPU round trip of the same cache is the reference: same error, same raw tokens.
    const ref = await decode(await encode(cache, profile, { backend: 'cpu' }), profile, { backend: 'cpu' });
    const fromHost = (await store.getEntry('s', { promote: false }))!;
    expect(fromHost.tier).toBe('host');
    for (const s of ['keys', 'values'] as const) {
      expect(relMse(cache, fromHost.cache, s)).toBeLessThan(relMse(cache, ref, s) * 1.05 + 1e-9);
    }
    for (const t of [0, 1, 79]) expect(tokenBitsEqual(fromHost.cache, cache, t)).toBe(true);
    expect(await store.evict('s', { to: 'disk' })).toBe('disk');
    const fromDisk = (await store.getEntry('s'))!;
    expect(fromDisk.tier).toBe('disk');
    expect(store.has('s')).toBe('device');
    expect(bitsEqual((await store.get('s'))!, fromDisk.cache)).toBe(true);
  });

  it('takes device caches and restores into caller device buffers from every tier', async () => {
    const store = await openStore({ backend: 'cuda' });
    const cache = session(4, 72);
    const src = await deviceBuffers(72);
    for (let l = 0; l < LAYOUT.layers; l++) {
      await deviceMemory.upload(src.keys[l]!, cache.keys[l]!);
      await deviceMemory.upload(src.values[l]!, cache.values[l]!);
    }
    await store.put('d', { layout: LAYOUT, tokens: 72, ...src, positions: cache.positions! }, { attachment: new Uint8Array([7]) });
    // The store holds its own copy: the engine may reuse its buffers.
    await deviceMemory.upload(src.keys[0]!, new Float32Array(LAYER_BYTES(72) / 4));
    expect(bitsEqual((await store.get('d'))!, cache)).toBe(true);

    const dst = await deviceBuffers(80);
    const target = { layout: LAYOUT, capacityTokens: 80, ...dst };
    const hot = (await store.getInto('d', target))!;
    expect(hot).toMatchObject({ tier: 'device', tokens: 72, attachment: new Uint8Array([7]) });
    expect(bitsEqual(await download(dst, 72, hot.positions), cache)).toBe(true);

    await store.evict('d');
    const warm = (await store.getInto('d', target, { promote: false }))!;
    expect(warm.tier).toBe('host');
    const fromHost = (await store.getEntry('d', { promote: false }))!.cache;
    const warmCache = await download(dst, 72, warm.positions);
    expect(relMse(fromHost, warmCache, 'keys')).toBeLessThan(1e-10);
    expect(relMse(fromHost, warmCache, 'values')).toBeLessThan(1e-10);

    await store.evict('d', { to: 'disk' });
    const cold = (await store.getInto('d', target))!;
    expect(cold.tier).toBe('disk');
    expect(store.has('d')).toBe('device');
    // Promoted from the target's contents: a later device hit returns exactly what went there.
    const coldCache = await download(dst, 72, cold.positions);
    expect(bitsEqual((await store.get('d'))!, coldCache)).toBe(true);

    expect(await store.getInto('missing', target)).toBeUndefined();
    const code = (p: Promise<unknown>) => p.then(() => 'resolved', (e: unknown) => (e instanceof KvtcError ? e.code : 'untyped'));
    expect(await code(store.getInto('d', { ...target, capacityTokens: 10 }))).toBe('E_CAPACITY');
    expect(await code(store.getInto('d', { ...target, keys: target.keys.slice(1) }))).toBe('E_LAYOUT');
    expect(await code(store.put('x', { layout: LAYOUT, tokens: 72, keys: [0x10n, 0x20n], values: src.values }))).toBe('E_LAYOUT');
    // A put that fails leaves the previous version of the session as it was.
    expect(await code(store.put('d', { layout: LAYOUT, tokens: 72, keys: [0x10n, 0x20n], values: src.values }))).toBe('E_LAYOUT');
    expect(bitsEqual((await store.get('d'))!, coldCache)).toBe(true);
    // A target too small for a warm session is refused before anything is decoded into it.
    await store.evict('d');
    expect(await code(store.getInto('d', { ...target, capacityTokens: 10 }))).toBe('E_CAPACITY');
    expect(store.has('d')).toBe('host');
  });

  it("a device cache holding NaN or Inf is refused as a host one is (scanned on the GPU), kept with nonFinite 'store'", async () => {
    const strict = await openStore({ backend: 'cuda' });
    const lenient = await openStore({ backend: 'cuda', nonFinite: 'store' });
    const rv = LAYOUT.kvHeads * LAYOUT.headDim;
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      const f32 = session(9, 72);
      (f32.values[1] as Float32Array)[50 * rv + 3] = Infinity;
      (f32.values[1] as Float32Array)[37 * rv + rv - 1] = NaN; // the first: the scan reports token 37
      const cache = withDtype(f32, dtype);
      const bytes = (cache.keys[0] as Uint16Array | Float32Array).byteLength;
      const src = { keys: [] as bigint[], values: [] as bigint[] };
      for (let l = 0; l < LAYOUT.layers; l++) {
        for (const s of ['keys', 'values'] as const) {
          const a = await deviceMemory.alloc(bytes);
          defer(() => deviceMemory.free(a));
          await deviceMemory.upload(a, cache[s][l]!);
          src[s].push(a);
        }
      }
      const onDevice = { layout: cache.layout, tokens: 72, ...src, positions: cache.positions! };
      const host = (await strict.put(`h-${dtype}`, cache).catch((e: KvtcError) => e)) as KvtcError;
      const dev = (await strict.put(`d-${dtype}`, onDevice).catch((e: KvtcError) => e)) as KvtcError;
      expect(host).toMatchObject({ code: 'E_LAYOUT', message: expect.stringContaining('cache.values[1] holds NaN or Inf at token 37') });
      expect(dev).toMatchObject({ code: host.code, message: host.message });
      expect(strict.has(`d-${dtype}`)).toBeUndefined();
      await lenient.put(`d-${dtype}`, onDevice);
      expect(bitsEqual((await lenient.get(`d-${dtype}`))!, cache)).toBe(true);
    }
  });

  it('capacity moves sessions between device memory and the host tier; a full device loses nothing', async () => {
    const store = await openStore({ backend: 'cuda', tiers: { device: { capacityBytes: 2 * sessionBytes(64) + 2048 } } }); // two sessions and their overheads
    const caches = [5, 6, 7, 8].map((s) => session(s));
    for (const [i, c] of caches.entries()) await store.put(`c${i}`, c);
    expect(store.stats().device.entries).toBe(2);
    expect(store.stats().host.entries).toBe(2);
    for (const [i, c] of caches.entries()) {
      const got = (await store.get(`c${i}`))!;
      expect(relMse(c, got, 'keys')).toBeLessThan(0.05);
    }
    if (!REAL_DEVICE) {
      // Device memory exhausted (the engine took it): puts and promotions fall back to the host tier.
      for (const id of ['c0', 'c1', 'c2', 'c3']) await store.delete(id);
      const m = await deviceMemory.info();
      process.env.KVTC_EMU_DEVICE_BYTES = String(m.total - m.free + 1024);
      try {
        const big = session(9);
        await store.put('big', big);
        expect(store.has('big')).toBe('host');
        const got = (await store.getEntry('big'))!;
        expect(got.tier).toBe('host');
        expect(store.has('big')).toBe('host'); // no device memory to promote into
        expect(relMse(big, got.cache, 'keys')).toBeLessThan(0.05);
        await store.evict('big', { to: 'disk' });
        expect(relMse(big, (await store.get('big'))!, 'keys')).toBeLessThan(0.05);
      } finally {
        delete process.env.KVTC_EMU_DEVICE_BYTES;
      }
    }
  });
});
