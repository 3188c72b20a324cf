import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { threadId } from 'node:worker_threads';
import { KvStore, encode, type CodecProfile, type GetStatus, type KvCache, type StoreEvent, type StoreEventName, type StoreOptions } from '../../src/index.js';
import { native } from '../../src/binding.js';
import { decodeThreads } from '../../src/internal/testing.js';
import { relMse, tokenBitsEqual } from '../helpers/metrics.js';
import { LAYOUT, session, sessionBytes, tempDir, testProfile } from '../helpers/store.js';
import { syntheticCache } from '../helpers/synthetic.js';

let profile: CodecProfile;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  profile = await testProfile();
});

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function openStore(options: Partial<StoreOptions> = {}, path?: string): Promise<{ store: KvStore; path: string; events: [StoreEventName, StoreEvent][] }> {
  let dir = path;
  if (!dir) {
    const t = await tempDir();
    dir = t.path;
    cleanups.push(t.cleanup);
  }
  const store = await KvStore.open({ profile, path: dir, workers: { minThreads: 1, maxThreads: 2 }, ...options });
  cleanups.push(() => store.close().catch(() => undefined));
  const events: [StoreEventName, StoreEvent][] = [];
  for (const name of ['put', 'demote', 'spill', 'promote', 'evict', 'delete', 'expire', 'corrupt', 'error'] as StoreEventName[]) {
    store.on(name, (e) => events.push([name, e]));
  }
  return { store, path: dir, events };
}

function sameBits(a: KvCache, b: KvCache): boolean {
  if (a.tokens !== b.tokens) return false;
  for (let t = 0; t < a.tokens; t++) if (!tokenBitsEqual(a, b, t)) return false;
  return true;
}

describe('API and events', () => {
  it('put -> device hit returns the exact cache, a copy the caller owns', async () => {
    const { store, events } = await openStore();
    const c = session(1);
    await store.put('a', c);
    expect(store.has('a')).toBe('device');
    const got = (await store.get('a'))!;
    expect(sameBits(c, got)).toBe(true);
    (got.keys[0] as Float32Array)[0] = 12345; // must not reach the stored session
    expect(sameBits(c, (await store.get('a'))!)).toBe(true);
    (c.keys[0] as Float32Array)[1] = 777; // nor may the caller's later writes
    expect((((await store.get('a'))!.keys[0]) as Float32Array)[1]).not.toBe(777);
    expect(events.map((e) => e[0])).toEqual(['put']);
    expect(events[0]![1]).toMatchObject({ id: 'a', to: 'device', rawBytes: sessionBytes() });
    const s = store.stats();
    expect(s.device).toMatchObject({ entries: 1, rawBytes: sessionBytes(), hits: 3 });
    expect(s.misses).toBe(0);
  });

  it('evict to host, then get promotes back; data within codec tolerance, sinks and window exact', async () => {
    const { store, events } = await openStore();
    const c = session(2, 200);
    await store.put('s', c);
    expect(await store.evict('s')).toBe('host');
    expect(store.has('s')).toBe('host');
    expect(store.stats().host.entries).toBe(1);
    expect(store.stats().host.storedBytes).toBeLessThan(sessionBytes(200) / 2);
    const got = (await store.get('s'))!;
    expect(store.has('s')).toBe('device');
    expect(relMse(c, got, 'keys')).toBeLessThan(0.02);
    expect(relMse(c, got, 'values')).toBeLessThan(0.02);
    for (const t of [0, 1, 192, 199]) expect(tokenBitsEqual(c, got, t)).toBe(true);
    expect(events.map((e) => e[0])).toEqual(['put', 'demote', 'evict', 'promote']);
    expect(events[1]![1]).toMatchObject({ id: 's', from: 'device', to: 'host' });
    expect(events[3]![1]).toMatchObject({ id: 's', from: 'host', to: 'device' });
    expect(store.stats().host.hits).toBe(1);
    expect(native.arenaStats().blocks).toBeGreaterThanOrEqual(0);
  });

  it('evict to disk, get from disk; get without promote leaves it there', async () => {
    const { store, events } = await openStore();
    const c = session(3, 100);
    await store.put('d', c);
    expect(await store.evict('d', { to: 'disk' })).toBe('disk');
    expect(store.has('d')).toBe('disk');
    const peek = (await store.get('d', { promote: false }))!;
    expect(relMse(c, peek, 'keys')).toBeLessThan(0.02);
    expect(store.has('d')).toBe('disk');
    await store.get('d');
    expect(store.has('d')).toBe('device');
    expect(events.filter((e) => e[0] === 'promote')[0]![1]).toMatchObject({ from: 'disk', to: 'device' });
    expect(store.stats().disk.hits).toBe(2);
  });

  it('get into a caller cache: the same bits from every tier, in the caller\'s arrays, reused', async () => {
    const { store } = await openStore();
    const c = session(4, 120);
    await store.put('i', c);
    const n = 150 * LAYOUT.kvHeads * LAYOUT.headDim;
    const into: KvCache = { layout: LAYOUT, tokens: 150, keys: [new Float32Array(n).fill(9), new Float32Array(n)], values: [new Float32Array(n), new Float32Array(n)], positions: new Int32Array(150) };
    for (const where of ['device', 'host', 'disk'] as const) {
      if (where !== 'device') await store.evict('i', { to: where });
      const want = (await store.get('i', { promote: false }))!;
      const status: GetStatus = {};
      const got = (await store.get('i', { into, status, promote: false }))!;
      expect(status).toMatchObject({ result: 'hit', tier: where });
      expect(got.tokens).toBe(120);
      expect(sameBits(want, got)).toBe(true);
      expect(got.keys[0]!.buffer).toBe(into.keys[0]!.buffer);
      expect(got.positions!.buffer).toBe(into.positions!.buffer);
      expect((into.keys[0] as Float32Array)[n - 1]).toBe(9); // rows past the session's: untouched
      (got.values[1] as Float32Array)[0] = 4242; // the caller's memory: the stored session is not affected
      expect((((await store.get('i', { promote: false }))!.values[1]) as Float32Array)[0]).not.toBe(4242);
      await store.get('i'); // back to the hot tier for the next round
    }
    expect(store.stats().misses).toBe(0);
  });

  it('get into a cache that cannot hold the session rejects naming the field; the session stays', async () => {
    const { store } = await openStore();
    await store.put('j', session(5, 64));
    const n = 63 * LAYOUT.kvHeads * LAYOUT.headDim;
    const small: KvCache = { layout: LAYOUT, tokens: 63, keys: [new Float32Array(n), new Float32Array(n)], values: [new Float32Array(n), new Float32Array(n)] };
    await expect(store.get('j', { into: small })).rejects.toMatchObject({ code: 'E_LAYOUT', message: expect.stringContaining('options.into holds 63 tokens') });
    const m = 64 * LAYOUT.headDim; // one kvHead: another model's layout
    const other: KvCache = { layout: { ...LAYOUT, kvHeads: 1 }, tokens: 64, keys: [new Float32Array(m), new Float32Array(m)], values: [new Float32Array(m), new Float32Array(m)] };
    await expect(store.get('j', { into: other })).rejects.toMatchObject({ code: 'E_PROFILE_MISMATCH' });
    await expect(store.get('j', { into: {} as KvCache })).rejects.toMatchObject({ code: 'E_LAYOUT', message: expect.stringContaining('options.into') });
    expect(sameBits((await store.get('j'))!, session(5, 64))).toBe(true);
  });

  it('delete forgets everywhere; get of an unknown id is a miss', async () => {
    const { store, events } = await openStore();
    await store.put('x', session(4));
    await store.evict('x', { to: 'disk' });
    await store.put('y', session(5));
    expect(await store.delete('x')).toBe(true);
    expect(await store.delete('x')).toBe(false);
    expect(store.has('x')).toBeUndefined();
    expect(await store.get('x')).toBeUndefined();
    expect(await store.get('nope')).toBeUndefined();
    expect(store.stats().misses).toBe(2);
    expect(store.stats().disk.entries).toBe(0);
    expect(events.filter((e) => e[0] === 'delete').map((e) => e[1])).toEqual([{ id: 'x', from: 'disk' }]);
  });

  it('put replaces a previous version in any tier', async () => {
    const { store } = await openStore();
    await store.put('r', session(6));
    await store.evict('r', { to: 'disk' });
    const v2 = session(7);
    await store.put('r', v2);
    expect(store.has('r')).toBe('device');
    expect(store.stats().disk.entries).toBe(0);
    expect(sameBits(v2, (await store.get('r'))!)).toBe(true);
  });

  it('bad input is a KvtcError with a specific code and leaves the store unchanged', async () => {
    const { store } = await openStore();
    await store.put('ok', session(8));
    const cases: [() => Promise<unknown>, string][] = [
      [() => store.put('', session(1)), 'E_OPTIONS'],
      [() => store.put('x'.repeat(5000), session(1)), 'E_OPTIONS'],
      [() => store.put(42 as unknown as string, session(1)), 'E_OPTIONS'],
      [() => store.put('a', { ...session(1), tokens: 3 }), 'E_LAYOUT'],
      [() => store.put('a', syntheticCache({ layout: { ...LAYOUT, layers: 3 }, tokens: 8 })), 'E_PROFILE_MISMATCH'],
      [() => store.put('a', session(1), { ttlMs: -1 }), 'E_OPTIONS'],
      [() => store.put('a', session(1), { pin: 'yes' as unknown as boolean }), 'E_OPTIONS'],
      [() => store.get(''), 'E_OPTIONS'],
      [() => store.get('ok', { promote: 1 as unknown as boolean }), 'E_OPTIONS'],
      [() => store.evict('ok', { to: 'gpu' as 'host' }), 'E_OPTIONS'],
    ];
    for (const [fn, code] of cases) await expect(fn()).rejects.toMatchObject({ code });
    expect(store.has('a')).toBeUndefined();
    expect(store.has('ok')).toBe('device');
    expect(store.stats().device.entries).toBe(1);
  });

  it('options are validated with messages naming the field', async () => {
    const t = await tempDir();
    cleanups.push(t.cleanup);
    await expect(KvStore.open({ profile, path: t.path, tiers: { host: { capacityBytes: -1 } } })).rejects.toMatchObject({
      code: 'E_OPTIONS',
      message: 'options.tiers.host.capacityBytes must be a non-negative integer, got -1',
    });
    await expect(KvStore.open({ profile, path: t.path, writePolicy: 'sometimes' as 'write-back' })).rejects.toMatchObject({ code: 'E_OPTIONS' });
    await expect(KvStore.open({ profile: '/nonexistent/profile.kvtcp', path: t.path })).rejects.toMatchObject({ code: 'E_IO' });
    const first = await KvStore.open({ profile, path: t.path });
    await expect(KvStore.open({ profile, path: `${t.path}/.` })).rejects.toMatchObject({ code: 'E_OPTIONS', message: expect.stringContaining('already open') });
    await first.close();
    await (await KvStore.open({ profile, path: t.path })).close(); // free again after close
  });
});

describe('backend selection without a usable CUDA device', () => {
  const noDevice = native.buildInfo().cudaDevices === 0;

  it.skipIf(!noDevice)("'cuda' is E_BACKEND; 'auto' runs on the CPU with one process warning", async () => {
    const t = await tempDir();
    cleanups.push(t.cleanup);
    await expect(KvStore.open({ profile, path: t.path, backend: 'cuda' })).rejects.toMatchObject({
      code: 'E_BACKEND',
      message: expect.stringContaining("backend 'cuda' requested but"),
    });
    // A fresh process: the warning is once per process, and this one has warned already.
    const script = `
      import { KvStore, CodecProfile } from './dist/index.js';
      const warnings = [];
      process.on('warning', (w) => warnings.push(w.code));
      const profile = CodecProfile.fromBytes(new Uint8Array(Buffer.from(process.argv[1], 'base64')));
      const stores = [];
      for (const p of [process.argv[2] + '/a', process.argv[2] + '/b']) stores.push(await KvStore.open({ profile, path: p }));
      const backends = stores.map((s) => s.stats().backend);
      const e = await stores[0].put('x', { layout: profile.layout, tokens: 1, keys: profile.layout.layers === 2 ? [1n, 2n] : [], values: [3n, 4n] }).catch((err) => err.code);
      for (const s of stores) await s.close();
      await new Promise((r) => setImmediate(r));
      console.log(JSON.stringify({ warnings, backends, e }));
    `;
    const { execFileSync } = await import('node:child_process');
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script, Buffer.from(profile.toBytes()).toString('base64'), t.path], {
      cwd: new URL('../../', import.meta.url),
      encoding: 'utf8',
    });
    expect(JSON.parse(out)).toEqual({ warnings: ['KVTC_CPU_FALLBACK'], backends: ['cpu', 'cpu'], e: 'E_BACKEND' });
  });
});

describe('policies', () => {
  it('device capacity demotes the least recently used sessions', async () => {
    const { store, events } = await openStore({ tiers: { device: { capacityBytes: Math.floor(sessionBytes() * 2.5) } } });
    await store.put('a', session(1));
    await store.put('b', session(2));
    await store.get('a'); // b is now least recently used
    await store.put('c', session(3));
    expect(store.has('b')).toBe('host');
    expect(store.has('a')).toBe('device');
    expect(store.has('c')).toBe('device');
    expect(store.stats().device.rawBytes).toBeLessThanOrEqual(sessionBytes() * 2.5);
    expect(events.filter((e) => e[0] === 'demote').map((e) => e[1].id)).toEqual(['b']);
  });

  it('pinned sessions stay hot; lower priority leaves first; pins beyond capacity are refused', async () => {
    const { store } = await openStore({ tiers: { device: { capacityBytes: sessionBytes() * 2 + 2048 } } }); // two sessions and their overheads
    await store.put('pinned', session(1), { pin: true });
    await store.put('low', session(2), { priority: -1 });
    await store.put('high', session(3), { priority: 5 });
    expect(store.has('pinned')).toBe('device');
    expect(store.has('low')).toBe('host');
    expect(store.has('high')).toBe('device');
    await store.put('p2', session(4), { pin: true });
    await expect(store.put('p3', session(5), { pin: true })).rejects.toMatchObject({ code: 'E_CAPACITY' });
    expect(store.has('p3')).toBeUndefined();
    expect(store.has('pinned')).toBe('device');
  });

  it('a cache larger than the whole device tier goes straight to the host tier', async () => {
    const { store, events } = await openStore({ tiers: { device: { capacityBytes: sessionBytes(64) } } });
    await store.put('big', session(9, 200));
    expect(store.has('big')).toBe('host');
    expect(events[0]).toEqual(['put', expect.objectContaining({ id: 'big', to: 'host' })]);
  });

  it('host capacity spills to disk; disk capacity evicts the least recently used', async () => {
    const blobBytes = (await encode(session(1, 100), profile)).length;
    const { store, events } = await openStore({
      tiers: { device: { capacityBytes: 0 }, host: { capacityBytes: 1 }, disk: { capacityBytes: Math.floor(blobBytes * 1.5) } },
    });
    await store.put('a', session(1, 100));
    expect(store.has('a')).toBe('disk');
    await store.put('b', session(2, 100));
    expect(store.has('b')).toBe('disk');
    expect(store.has('a')).toBeUndefined();
    const names = events.map((e) => `${e[0]}:${e[1].id}`);
    expect(names).toEqual(['put:a', 'spill:a', 'put:b', 'spill:b', 'evict:a']);
  });

  it('idle sessions are demoted, then spilled', async () => {
    const { store, events } = await openStore({ tiers: { device: { idleMs: 80 }, host: { idleMs: 160 } }, sweepIntervalMs: 20 });
    await store.put('i', session(1));
    await vi.waitFor(() => expect(store.has('i')).toBe('host'), { timeout: 3000, interval: 20 });
    await vi.waitFor(() => expect(store.has('i')).toBe('disk'), { timeout: 3000, interval: 20 });
    expect(events.map((e) => e[0])).toEqual(['put', 'demote', 'spill']);
  });

  it('a session past its TTL on disk expires', async () => {
    const { store, events } = await openStore({ tiers: { disk: { ttlMs: 100 } }, sweepIntervalMs: 20 });
    await store.put('t', session(1));
    await store.evict('t', { to: 'disk' });
    await vi.waitFor(() => expect(store.has('t')).toBeUndefined(), { timeout: 3000, interval: 20 });
    expect(events.at(-1)).toEqual(['expire', { id: 't', from: 'disk' }]);
    expect(await store.get('t')).toBeUndefined();
  });

  it('write-through persists every demotion before it resolves', async () => {
    const { store } = await openStore({ writePolicy: 'write-through' });
    await store.put('w', session(1));
    await store.evict('w');
    expect(store.has('w')).toBe('host');
    expect(store.stats().disk.entries).toBe(1);
  });
});

describe('durability', () => {
  it('warm restart finds every session that reached disk; close flushes hot and warm sessions', async () => {
    const a = await openStore();
    const c1 = session(11, 80);
    const c2 = session(12, 80);
    const c3 = session(13, 80);
    await a.store.put('on-disk', c1);
    await a.store.evict('on-disk', { to: 'disk' });
    await a.store.put('warm', c2);
    await a.store.evict('warm');
    await a.store.put('hot', c3);
    await a.store.close();
    const b = await openStore({}, a.path);
    expect(b.store.has('on-disk')).toBe('disk');
    expect(b.store.has('warm')).toBe('disk');
    expect(b.store.has('hot')).toBe('disk');
    for (const [id, c] of [['on-disk', c1], ['warm', c2], ['hot', c3]] as const) {
      const got = (await b.store.get(id))!;
      expect(relMse(c, got, 'keys')).toBeLessThan(0.02);
    }
  });

  it('after close every call rejects with E_CLOSED; close is idempotent', async () => {
    const { store } = await openStore();
    await store.put('a', session(1));
    await store.close();
    await store.close();
    await expect(store.put('a', session(1))).rejects.toMatchObject({ code: 'E_CLOSED' });
    await expect(store.get('a')).rejects.toMatchObject({ code: 'E_CLOSED' });
    await expect(store.evict('a')).rejects.toMatchObject({ code: 'E_CLOSED' });
    await expect(store.delete('a')).rejects.toMatchObject({ code: 'E_CLOSED' });
  });

  it('compression none stores raw blobs with the same guarantees', async () => {
    const { store } = await openStore({ compression: 'none' });
    const c = session(21);
    await store.put('raw', c);
    await store.evict('raw', { to: 'disk' });
    expect(sameBits(c, (await store.get('raw'))!)).toBe(true);
    expect(store.stats().device.entries).toBe(1);
  });
});

describe('attachments', () => {
  it('an attachment travels with the session through every tier and a restart', async () => {
    const a = await openStore();
    const att = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff);
    await a.store.put('s', session(1), { attachment: att });
    expect(Array.from((await a.store.getEntry('s'))!.attachment!)).toEqual(Array.from(att));
    await a.store.evict('s');
    const fromHost = (await a.store.getEntry('s', { promote: false }))!;
    expect(fromHost.tier).toBe('host');
    expect(Array.from(fromHost.attachment!)).toEqual(Array.from(att));
    await a.store.evict('s', { to: 'disk' });
    await a.store.close();
    const b = await openStore({}, a.path);
    const fromDisk = (await b.store.getEntry('s'))!;
    expect(fromDisk.tier).toBe('disk');
    expect(Array.from(fromDisk.attachment!)).toEqual(Array.from(att));
    await expect(b.store.put('t', session(2), { attachment: [1, 2] as unknown as Uint8Array })).rejects.toMatchObject({ code: 'E_OPTIONS' });
  });
});

describe('concurrency', () => {
  it('operations on one id apply in call order', async () => {
    const { store } = await openStore();
    const v1 = session(31);
    const v2 = session(32);
    const ops = [store.put('o', v1), store.evict('o'), store.put('o', v2), store.get('o')];
    const results = await Promise.all(ops);
    expect(sameBits(v2, results[3] as KvCache)).toBe(true);
    const del = store.delete('o');
    const after = store.get('o');
    expect(await del).toBe(true);
    expect(await after).toBeUndefined();
  });

  it('concurrent gets of one id share one restore; restores run off the main thread', async () => {
    const { store, events } = await openStore();
    await store.put('s', session(41, 150));
    await store.evict('s', { to: 'disk' });
    const spy = vi.spyOn(native, 'decodePrepare');
    const gets = await Promise.all(Array.from({ length: 6 }, () => store.get('s')));
    expect(gets.every((g) => g && g.tokens === 150)).toBe(true);
    expect(events.filter((e) => e[0] === 'promote')).toHaveLength(1);
    expect(spy).not.toHaveBeenCalled();
    spy.mockRestore();
    expect(decodeThreads(store).size).toBeGreaterThan(0);
    expect(decodeThreads(store).has(threadId)).toBe(false);
  });

  it('a shared restore the store keeps no copy of: the first caller writing its result never reaches the others', async () => {
    const { store } = await openStore();
    const c = session(43, 400);
    await store.put('w', c);
    await store.evict('w', { to: 'disk' });
    const want = (await store.get('w', { promote: false }))!;
    for (let round = 0; round < 5; round++) {
      // Not promoted: the restore is referenced by nothing in the store once it settles.
      const first = store.get('w', { promote: false }).then((got) => {
        for (const a of [...got!.keys, ...got!.values]) (a as Float32Array).fill(999);
        return got;
      });
      const others = Array.from({ length: 3 }, () => store.get('w', { promote: false }));
      await first;
      for (const o of await Promise.all(others)) expect(sameBits(want, o!)).toBe(true);
    }
  });

  it('different ids proceed in parallel and all land', async () => {
    const { store } = await openStore({ tiers: { device: { capacityBytes: sessionBytes() * 3 } } });
    const ids = Array.from({ length: 12 }, (_, i) => `p${i}`);
    await Promise.all(ids.map((id, i) => store.put(id, session(100 + i))));
    await Promise.all(ids.map((id) => store.evict(id)));
    const got = await Promise.all(ids.map((id) => store.get(id)));
    expect(got.every((g) => g !== undefined)).toBe(true);
    await store.settled(); // gets do not wait for the demotions their promotions cause
    expect(store.stats().device.rawBytes).toBeLessThanOrEqual(sessionBytes() * 3);
  });
});
