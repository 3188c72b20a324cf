/**
 * The adversarial suite: holes found by hostile use of the store, each a regression test, plus a
 * property-based run that mixes every kind of operation (TTLs, pins, priorities, attachments,
 * odd ids, evicts, deletes, closes and reopens) and checks after every step that every
 * acknowledged session is retrievable or was removed by an event the caller saw, that byte
 * accounting equals what is held and that no capacity is exceeded.
 * KVTC_ADVERSARIAL_RUNS scales the property run (npm run soak sets it high).
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { KvStore, calibrate, type KvCache, type StoreEvent } from '../../src/index.js';
import { LAYOUT, session, storeKit, tempDir, testProfile } from '../helpers/store.js';
import { tokenBitsEqual } from '../helpers/metrics.js';

const { defer, openStore } = storeKit();

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<string | undefined> {
  try {
    await (typeof p === 'function' ? p() : p);
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code ?? `not a KvtcError: ${String(err)}`;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The session itself came back: its token count, and its lossless sink and window tokens bit for bit. */
function sameSession(a: KvCache | undefined, b: KvCache): boolean {
  if (!a || a.tokens !== b.tokens) return false;
  return b.tokens === 0 || (tokenBitsEqual(a, b, 0) && tokenBitsEqual(a, b, b.tokens - 1));
}

describe('1. a TTL decision applies to the version it was made for', () => {
  it('an expired record swept while a newer version is being put does not take the newer one', async () => {
    const store = await openStore({ sweepIntervalMs: 1 });
    const expired: string[] = [];
    store.on('expire', (e) => expired.push(e.id));
    const ids = Array.from({ length: 8 }, (_, i) => `s${i}`);
    for (const id of ids) {
      // Not awaited in between: the second put and evict queue behind the first ones, and the
      // sweep sees the first record expired while the second is still being scanned and encoded.
      void store.put(id, session(1, 16), { ttlMs: 1 });
      void store.evict(id, { to: 'disk' });
      void store.put(id, session(2, 6000), { ttlMs: 0 });
      expect(await store.evict(id, { to: 'disk' })).toBe('disk');
    }
    await sleep(30);
    for (const id of ids) expect(store.has(id), id).toBe('disk');
    for (const id of ids) expect((await store.get(id))?.tokens, id).toBe(6000);
    // The first versions may have expired (with an event) before the second arrived; never after.
    expect(expired.length).toBeLessThanOrEqual(ids.length);
  });

  it('a session replaced with a TTL of 0 never expires, whatever the sweep saw before', async () => {
    const store = await openStore({ sweepIntervalMs: 1 });
    void store.put('x', session(1, 16), { ttlMs: 1 });
    void store.evict('x', { to: 'disk' });
    await sleep(5);
    void store.put('x', session(3, 32), { ttlMs: 0 });
    await store.evict('x', { to: 'disk' });
    await sleep(20);
    expect(store.has('x')).toBe('disk');
  });
});

describe('2. one id check at the API, for every call', () => {
  const bad = ['\uD800', 'a\uDC00b', 'x'.repeat(1901), ''];
  it.each(bad.map((id) => [JSON.stringify(id).slice(0, 20), id]))('id %s is refused by every call with E_OPTIONS', async (_n, id) => {
    const store = await openStore();
    expect(await codeOf(store.put(id, session(1)))).toBe('E_OPTIONS');
    expect(await codeOf(store.get(id))).toBe('E_OPTIONS');
    expect(await codeOf(store.getEntry(id))).toBe('E_OPTIONS');
    expect(await codeOf(store.evict(id))).toBe('E_OPTIONS');
    expect(await codeOf(store.delete(id))).toBe('E_OPTIONS');
    expect(await codeOf(() => store.has(id))).toBe('E_OPTIONS');
    expect(store.stats().device.entries).toBe(0);
  });

  it('ids that are valid everywhere round-trip through disk and a reopen', async () => {
    const t = await tempDir();
    defer(t.cleanup);
    const ids = ['😀', 'a\u0000b', ' ', 'x'.repeat(1900), 'é'.repeat(950)];
    const a = await KvStore.open({ profile: await testProfile(), path: t.path });
    for (const [i, id] of ids.entries()) {
      await a.put(id, session(i + 1));
      expect(await a.evict(id, { to: 'disk' })).toBe('disk');
    }
    await a.close();
    const b = await KvStore.open({ profile: await testProfile(), path: t.path });
    defer(() => b.close());
    for (const id of ids) expect(b.has(id)).toBe('disk');
  });

  it('a session whose spill fails does not stall the spills of the others', async () => {
    // A session too large for the disk tier stays in the host tier; the rest still spill.
    const store = await openStore({ tiers: { host: { capacityBytes: 4000 }, disk: { mapSizeBytes: 256 * 1024 } } });
    const errors: StoreEvent[] = [];
    store.on('error', (e) => errors.push(e));
    await store.put('huge', session(1, 16), { attachment: new Uint8Array(400 * 1024) });
    expect(await store.evict('huge')).toBe('host');
    for (let i = 0; i < 12; i++) {
      await store.put(`s${i}`, session(i + 2, 16));
      await store.evict(`s${i}`);
    }
    const s = store.stats();
    expect(store.has('huge')).toBe('host');
    expect(s.host.entries).toBeLessThanOrEqual(2);
    for (let i = 0; i < 12; i++) expect(store.has(`s${i}`)).toBe('disk');
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.every((e) => e.id === 'huge')).toBe(true);
  });
});

describe('3. every byte a session holds counts in its tier', () => {
  it('attachments and positions count in the hot tier, which stays within capacity', async () => {
    const cap = 5 << 20;
    const store = await openStore({ tiers: { device: { capacityBytes: cap } } });
    for (let i = 0; i < 8; i++) await store.put(`a${i}`, session(i + 1, 0), { attachment: new Uint8Array(2 << 20) });
    const s = store.stats();
    expect(s.device.storedBytes).toBeLessThanOrEqual(cap);
    expect(s.device.entries).toBeLessThanOrEqual(2);
    expect(s.device.storedBytes + s.host.storedBytes + s.disk.storedBytes).toBeGreaterThanOrEqual(8 * (2 << 20));
    for (let i = 0; i < 8; i++) expect((await store.getEntry(`a${i}`, { promote: false }))?.attachment?.length).toBe(2 << 20);
  });

  it('a record larger than mapSizeBytes with its metadata is refused before writing; close persists the rest and names what it could not', async () => {
    const t = await tempDir();
    defer(t.cleanup);
    const mapSizeBytes = 1 << 20;
    const store = await KvStore.open({ profile: await testProfile(), path: t.path, tiers: { disk: { mapSizeBytes } } });
    const big: string[] = [];
    for (let i = 0; i < 4; i++) {
      const id = `big${i}`;
      big.push(id);
      await store.put(id, session(i + 1, 0), { attachment: new Uint8Array(2 << 20) });
      expect(await codeOf(store.evict(id, { to: 'disk' }))).toBe('E_CAPACITY');
      expect(store.has(id)).not.toBe('disk');
    }
    for (let i = 0; i < 5; i++) await store.put(`small${i}`, session(i + 10, 16));
    const dataFile = join(t.path, 'data.mdb');
    expect(statSync(dataFile).size).toBeLessThanOrEqual(mapSizeBytes * 1.5);
    const err = await store.close().then(() => undefined, (e: unknown) => e as { code: string; message: string });
    expect(err?.code).toBe('E_CAPACITY');
    for (const id of big) expect(err?.message).toContain(id);
    expect(statSync(dataFile).size).toBeLessThanOrEqual(mapSizeBytes * 1.5);
    const again = await KvStore.open({ profile: await testProfile(), path: t.path, tiers: { disk: { mapSizeBytes } } });
    defer(() => again.close());
    for (let i = 0; i < 5; i++) expect(sameSession(await again.get(`small${i}`), session(i + 10, 16)), `small${i}`).toBe(true);
  });
});

describe('4. a store directory refuses another profile instead of destroying its sessions', () => {
  it('opening with another profile of the same layout is E_PROFILE_MISMATCH; the sessions survive', async () => {
    const profile = await testProfile();
    const other = await calibrate([session(50, 300), session(51, 300)], { ratio: 4, windowTokens: 8, sinkTokens: 2 });
    const t = await tempDir();
    defer(t.cleanup);
    const a = await KvStore.open({ profile, path: t.path });
    for (let i = 0; i < 20; i++) {
      await a.put(`s${i}`, session(i + 1));
      await a.evict(`s${i}`, { to: 'disk' });
    }
    await a.close();
    expect(await codeOf(KvStore.open({ profile: other, path: t.path }))).toBe('E_PROFILE_MISMATCH');
    // Opted in: the other profile's records are misses, left untouched (not quarantined).
    const b = await KvStore.open({ profile: other, path: t.path, foreignRecords: 'miss' });
    const corrupt: StoreEvent[] = [];
    const misses: StoreEvent[] = [];
    b.on('corrupt', (e) => corrupt.push(e));
    b.on('miss', (e) => misses.push(e));
    for (let i = 0; i < 20; i++) expect(await b.get(`s${i}`)).toBeUndefined();
    expect(corrupt).toEqual([]);
    expect(misses.map((m) => m.reason)).toEqual(Array(20).fill('profile-mismatch'));
    expect(b.quarantine.list()).toEqual([]);
    await b.close();
    const c = await KvStore.open({ profile, path: t.path });
    defer(() => c.close());
    for (let i = 0; i < 20; i++) expect(sameSession(await c.get(`s${i}`), session(i + 1)), `s${i}`).toBe(true);
  });

  it('quarantined records are listed, counted, bounded and can be cleared', async () => {
    const { open: openLmdb } = await import('lmdb');
    const profile = await testProfile();
    const t = await tempDir();
    defer(t.cleanup);
    const a = await KvStore.open({ profile, path: t.path });
    for (let i = 0; i < 6; i++) {
      await a.put(`q${i}`, session(i + 1, 128));
      await a.evict(`q${i}`, { to: 'disk' });
    }
    await a.close();
    // Damage every blob behind the store's back.
    const env = openLmdb({ path: t.path, maxDbs: 8 });
    const blobs = env.openDB<Uint8Array, Uint8Array>('blobs', { encoding: 'binary', keyEncoding: 'binary' });
    for (let i = 0; i < 6; i++) {
      const b = Buffer.from(blobs.getBinary(Buffer.from(`q${i}`))!);
      b[b.length >> 1] = b[b.length >> 1]! ^ 0xff;
      await blobs.put(Buffer.from(`q${i}`), b);
    }
    await env.close();
    const blobBytes = 2 * 2 * 128 * 2 * 16 * 4; // an upper bound of one encoded session
    const store = await KvStore.open({ profile, path: t.path, tiers: { disk: { quarantineBytes: 3 * blobBytes } } });
    defer(() => store.close());
    for (let i = 0; i < 6; i++) expect(await store.get(`q${i}`)).toBeUndefined();
    const listed = store.quarantine.list();
    expect(listed.length).toBe(6);
    const s = store.stats();
    expect(s.disk.quarantine.entries).toBe(6);
    expect(s.disk.quarantine.bytes).toBeLessThanOrEqual(3 * blobBytes);
    expect(s.disk.quarantine.bytes).toBeGreaterThan(0);
    expect(await store.quarantine.clear()).toBe(6);
    expect(store.quarantine.list()).toEqual([]);
    expect(store.stats().disk.quarantine).toEqual({ entries: 0, bytes: 0 });
  });
});

describe('5. listeners never change the outcome of a call', () => {
  it('throwing put and error listeners: the put resolves, the failure is a process warning', async () => {
    const store = await openStore();
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    defer(async () => void process.off('warning', onWarning));
    store.on('put', () => {
      throw new Error('put listener broke');
    });
    store.on('error', () => {
      throw new Error('error listener broke');
    });
    let second = 0;
    store.on('put', () => second++);
    await expect(store.put('a', session(1))).resolves.toBeUndefined();
    expect(store.has('a')).toBe('device');
    expect(second).toBe(1); // a throwing listener does not starve the next one
    await sleep(5);
    expect(warnings.some((w) => /put listener broke/.test(w.message))).toBe(true);
    await expect(store.get('a')).resolves.toBeDefined();
  });
});

describe('6. typed arrays are validated by their bytes', () => {
  it('a faked length is E_LAYOUT, and nothing is stored', async () => {
    const store = await openStore();
    const c = session(1, 32);
    const want = (c.keys[0] as Float32Array).length;
    const short = new Float32Array(want / 2);
    Object.defineProperty(short, 'length', { value: want });
    const faked: KvCache = { ...c, keys: [short, ...c.keys.slice(1)] };
    expect(await codeOf(store.put('f', faked))).toBe('E_LAYOUT');
    expect(store.has('f')).toBeUndefined();
  });
});

// ------------------------------------------------------------------------------ property run

type Op =
  | { op: 'put'; id: number; seed: number; tokens: number; pin: boolean; ttlMs: number; priority: number; attach: number }
  | { op: 'get'; id: number; promote: boolean }
  | { op: 'evict'; id: number; to: 'host' | 'disk' }
  | { op: 'delete'; id: number }
  | { op: 'wait'; ms: number }
  | { op: 'reopen' };

const IDS = ['a', '😀', 'a\u0000b', 'é'.repeat(40), ' ', 'z'];
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('put' as const), id: fc.nat(IDS.length - 1), seed: fc.integer({ min: 1, max: 40 }), tokens: fc.constantFrom(0, 8, 40, 96), pin: fc.boolean(), ttlMs: fc.constantFrom(0, 0, 2, 30), priority: fc.integer({ min: -2, max: 2 }), attach: fc.constantFrom(0, 0, 100, 5000) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('get' as const), id: fc.nat(IDS.length - 1), promote: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('evict' as const), id: fc.nat(IDS.length - 1), to: fc.constantFrom('host' as const, 'disk' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), id: fc.nat(IDS.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('wait' as const), ms: fc.constantFrom(1, 5, 40) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('reopen' as const) }) },
);

describe('adversarial property run', () => {
  it('acknowledged sessions are retrievable or left with an event; accounting and capacities hold', async () => {
    const profile = await testProfile();
    const runsWanted = Number(process.env.KVTC_ADVERSARIAL_RUNS ?? 25);
    let steps = 0;
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 30 }), async (ops) => {
        runs++;
        const t = await tempDir();
        const caps = { device: 40_000, host: 6_000, disk: 30_000 };
        const options = {
          profile,
          path: t.path,
          sweepIntervalMs: 1,
          tiers: { device: { capacityBytes: caps.device }, host: { capacityBytes: caps.host }, disk: { capacityBytes: caps.disk } },
          workers: { minThreads: 1, maxThreads: 1 },
        };
        // What each id holds as far as the caller knows: its data, or nothing.
        const alive = new Map<string, { seed: number; tokens: number; attach: number }>();
        const onGone = (e: StoreEvent) => {
          if (e.to === undefined) alive.delete(e.id);
        };
        let store = await KvStore.open(options);
        const listen = (s: KvStore) => {
          s.on('evict', onGone).on('expire', onGone);
        };
        listen(store);
        try {
          for (const o of ops) {
            steps++;
            if (o.op === 'put') {
              const id = IDS[o.id]!;
              const opts = { pin: o.pin, ttlMs: o.ttlMs, priority: o.priority, ...(o.attach ? { attachment: new Uint8Array(o.attach).fill(o.seed) } : {}) };
              const code = await codeOf(store.put(id, session(o.seed, o.tokens), opts));
              if (code === undefined) alive.set(id, { seed: o.seed, tokens: o.tokens, attach: o.attach });
              else expect(code, JSON.stringify(o)).toBe('E_CAPACITY'); // pinning beyond the hot tier
            } else if (o.op === 'get') {
              const id = IDS[o.id]!;
              const want = alive.get(id);
              const got = await store.getEntry(id, { promote: o.promote });
              if (!want) expect(got, `get ${id}`).toBeUndefined();
              else if (!got) {
                // Only with an event the caller saw (a TTL that ran out is reported as it is found).
                expect(alive.has(id), `get ${id} missed without an event`).toBe(false);
              } else {
                expect(got!.cache.tokens).toBe(want.tokens);
                expect(got!.attachment?.length ?? 0).toBe(want.attach);
                if (want.attach) expect(got!.attachment![0]).toBe(want.seed);
              }
            } else if (o.op === 'evict') {
              const code = await codeOf(store.evict(IDS[o.id]!, { to: o.to }));
              if (code !== undefined) expect(code).toBe('E_CAPACITY');
            } else if (o.op === 'delete') {
              await store.delete(IDS[o.id]!);
              alive.delete(IDS[o.id]!);
            } else if (o.op === 'wait') {
              await sleep(o.ms);
            } else {
              // A close that cannot persist something says so; what it names is gone, the rest stays.
              const err = await store.close().then(() => undefined, (e: unknown) => e as Error);
              if (err) for (const id of [...alive.keys()]) if (err.message.includes(`'${id}'`)) alive.delete(id);
              store = await KvStore.open(options);
              listen(store);
            }
            await store.settled(); // gets do not wait for the policy work they cause
            const s = store.stats();
            expect(s.device.storedBytes).toBeLessThanOrEqual(caps.device);
            expect(s.host.storedBytes).toBeLessThanOrEqual(caps.host);
            expect(s.disk.storedBytes).toBeLessThanOrEqual(caps.disk);
            expect(s.arena.bytes).toBe(s.host.storedBytes - s.host.overheadBytes);
            for (const [i, id] of IDS.entries()) {
              const h = store.has(id);
              expect(h !== undefined, `has(${i}) after ${JSON.stringify(o)}`).toBe(alive.has(id));
            }
          }
        } finally {
          await store.close().catch(() => undefined);
          await t.cleanup();
        }
      }),
      { numRuns: runsWanted, seed: 190190 },
    );
    console.log(`[adversarial] ${runs} random sequences, ${steps} operations checked`);
    expect(LAYOUT.layers).toBe(2);
  });
});
