/**
 * Hostile input, property-based: wrong shapes, dtypes, lengths, NaN/Inf, huge sizes, odd ids and
 * a profile of another model — each is a KvtcError with a specific code, and the store's state is
 * unchanged.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { CodecProfile, KvStore, KvtcError, type KvCache } from '../../src/index.js';
import { LAYOUT, session, tempDir, testProfile } from '../helpers/store.js';
import { syntheticCache } from '../helpers/synthetic.js';

let profile: CodecProfile;
let store: KvStore;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  profile = await testProfile();
  const t = await tempDir();
  cleanups.push(t.cleanup);
  store = await KvStore.open({ profile, path: t.path, tiers: { device: { capacityBytes: 200_000 } } });
  await store.put('keep-device', session(1));
  await store.put('keep-host', session(2));
  await store.evict('keep-host');
});
afterAll(async () => {
  await store.close();
  for (const c of cleanups) await c();
});

type Mutation = { name: string; code: string; apply: (c: KvCache) => unknown };

const mutations: Mutation[] = [
  { name: 'one layer too few', code: 'E_LAYOUT', apply: (c) => ({ ...c, keys: c.keys.slice(1) }) },
  { name: 'extra layer', code: 'E_LAYOUT', apply: (c) => ({ ...c, values: [...c.values, c.values[0]] }) },
  { name: 'short array', code: 'E_LAYOUT', apply: (c) => ({ ...c, keys: c.keys.map((k, i) => (i ? k : (k as Float32Array).subarray(1))) }) },
  { name: 'Float64Array', code: 'E_LAYOUT', apply: (c) => ({ ...c, keys: c.keys.map((k) => new Float64Array((k as Float32Array).length)) }) },
  { name: 'plain arrays', code: 'E_LAYOUT', apply: (c) => ({ ...c, values: c.values.map((v) => Array.from(v as Float32Array)) }) },
  { name: 'f16 label on f32 data', code: 'E_LAYOUT', apply: (c) => ({ ...c, layout: { ...c.layout, dtype: 'f16' } }) },
  { name: 'dtype f64', code: 'E_LAYOUT', apply: (c) => ({ ...c, layout: { ...c.layout, dtype: 'f64' } }) },
  { name: 'tokens off by one', code: 'E_LAYOUT', apply: (c) => ({ ...c, tokens: c.tokens + 1 }) },
  { name: 'negative tokens', code: 'E_LAYOUT', apply: (c) => ({ ...c, tokens: -3 }) },
  { name: 'NaN tokens', code: 'E_LAYOUT', apply: (c) => ({ ...c, tokens: Number.NaN }) },
  { name: 'huge tokens', code: 'E_LAYOUT', apply: (c) => ({ ...c, tokens: 2 ** 40 }) },
  { name: 'positions too short', code: 'E_LAYOUT', apply: (c) => ({ ...c, positions: new Int32Array(3) }) },
  { name: 'positions Float32Array', code: 'E_LAYOUT', apply: (c) => ({ ...c, positions: new Float32Array(c.tokens) }) },
  { name: 'no layout', code: 'E_LAYOUT', apply: (c) => ({ ...c, layout: undefined }) },
  { name: 'kvHeads 0', code: 'E_LAYOUT', apply: (c) => ({ ...c, layout: { ...c.layout, kvHeads: 0 } }) },
  { name: 'rope theta NaN', code: 'E_LAYOUT', apply: (c) => ({ ...c, layout: { ...c.layout, rope: { theta: Number.NaN, style: 'neox' } } }) },
  { name: 'not an object', code: 'E_LAYOUT', apply: () => 42 },
  { name: 'NaN value', code: 'E_LAYOUT', apply: (c) => withValue(c, Number.NaN) },
  { name: 'Infinity value', code: 'E_LAYOUT', apply: (c) => withValue(c, Number.POSITIVE_INFINITY) },
  { name: 'another model (3 layers)', code: 'E_PROFILE_MISMATCH', apply: () => syntheticCache({ layout: { ...LAYOUT, layers: 3 }, tokens: 8 }) },
  { name: 'another model (rope style)', code: 'E_PROFILE_MISMATCH', apply: (c) => ({ ...c, layout: { ...c.layout, rope: { theta: 10000, style: 'interleaved' } } }) },
  { name: 'another model (no rope)', code: 'E_PROFILE_MISMATCH', apply: (c) => ({ ...c, layout: { ...c.layout, rope: undefined } }) },
];

function withValue(c: KvCache, v: number): KvCache {
  const keys = c.keys.map((k) => Float32Array.from(k as Float32Array));
  keys[1]![7 * 32 + 3] = v;
  return { ...c, keys };
}

const badIds = fc.oneof(
  fc.constant(''),
  fc.constant('x'.repeat(2000)),
  fc.constantFrom(null, undefined, 42, {}, ['a'], Symbol.for('id')),
  fc.string({ minLength: 1901, maxLength: 2100 }),
);

const badPutOptions = fc.oneof(
  fc.record({ pin: fc.constantFrom('yes', 1, null) }),
  fc.record({ ttlMs: fc.constantFrom(-1, 1.5, Number.NaN, '10') }),
  fc.record({ priority: fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, 'high') }),
  fc.record({ attachment: fc.constantFrom('bytes', [1, 2, 3], new Uint8Array(17 << 20)) }),
  fc.record({ pinned: fc.constant(true) }),
  fc.record({ ttl: fc.constant(10) }),
);

function snapshot(): string {
  const s = store.stats();
  return JSON.stringify([s.device.entries, s.host.entries, s.disk.entries, s.device.rawBytes, store.has('keep-device'), store.has('keep-host')]);
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (err) {
    return err instanceof KvtcError ? err.code : `not a KvtcError: ${String(err)}`;
  }
}

describe('hostile input', () => {
  it('malformed caches, ids and options are KvtcErrors with specific codes; the store is unchanged', async () => {
    const before = snapshot();
    let cases = 0;
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: mutations.length - 1 }), fc.string({ minLength: 1, maxLength: 40 }), async (mi, id) => {
        const m = mutations[mi]!;
        cases++;
        expect(await code(store.put(id, m.apply(session(5, 40)) as KvCache)), m.name).toBe(m.code);
        expect(store.has(id)).toBeUndefined();
      }),
      { numRuns: 300, seed: 7 },
    );
    await fc.assert(
      fc.asyncProperty(badIds, async (id) => {
        cases++;
        expect(await code(store.put(id as string, session(5, 40)))).toBe('E_OPTIONS');
        expect(await code(store.get(id as string))).toBe('E_OPTIONS');
        expect(await code(store.delete(id as string))).toBe('E_OPTIONS');
      }),
      { numRuns: 60, seed: 8 },
    );
    await fc.assert(
      fc.asyncProperty(badPutOptions, async (opts) => {
        cases++;
        expect(await code(store.put('new', session(5, 40), opts as never))).toBe('E_OPTIONS');
      }),
      { numRuns: 60, seed: 9 },
    );
    expect(snapshot()).toBe(before);
    expect(store.stats().misses).toBe(0);
    console.log(`[hostile] ${cases} malformed calls, each refused with its code, store unchanged`);
  });

  it('malformed store options and profiles are refused with E_OPTIONS / E_PROFILE', async () => {
    const t = await tempDir();
    cleanups.push(t.cleanup);
    let cases = 0;
    const optionArb = fc.oneof(
      fc.record({ tiers: fc.record({ device: fc.record({ capacityBytes: fc.constantFrom(-1, 1.5, Number.NaN, '1GB') }) }) }),
      fc.record({ tiers: fc.record({ host: fc.record({ idleMs: fc.constantFrom(-5, 'soon', Infinity) }) }) }),
      fc.record({ tiers: fc.constantFrom(7, 'big', [1]) }),
      fc.record({ writePolicy: fc.string().filter((s) => s !== 'write-back' && s !== 'write-through') }),
      fc.record({ compression: fc.constantFrom('zstd', 1) }),
      fc.record({ workers: fc.record({ minThreads: fc.constant(4), maxThreads: fc.constant(2) }) }),
      fc.record({ path: fc.constantFrom('', 5) }),
      fc.record({ nonFinite: fc.constantFrom('allow', true) }),
      // Misspelt keys are refused, not ignored.
      fc.record({ tier: fc.constant({ device: { capacityBytes: 1 } }) }),
      fc.record({ tiers: fc.record({ hot: fc.constant({ capacityBytes: 1 }) }) }),
      fc.record({ tiers: fc.record({ disk: fc.record({ ttl: fc.constant(5) }) }) }),
      fc.record({ worker: fc.constant({ maxThreads: 2 }) }),
    );
    await fc.assert(
      fc.asyncProperty(optionArb, async (o) => {
        cases++;
        expect(await code(KvStore.open({ profile, path: t.path, ...(o as object) }))).toBe('E_OPTIONS');
      }),
      { numRuns: 80, seed: 10 },
    );
    const good = profile.toBytes();
    await fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), fc.nat(), (junk, at) => {
        cases++;
        expect(() => CodecProfile.fromBytes(junk)).toThrow(expect.objectContaining({ code: 'E_PROFILE' }));
        const flipped = good.slice();
        flipped[at % flipped.length]! ^= 1 + (at % 255);
        expect(() => CodecProfile.fromBytes(flipped)).toThrow(expect.objectContaining({ code: 'E_PROFILE' }));
      }),
      { numRuns: 200, seed: 11 },
    );
    console.log(`[hostile] ${cases} malformed options and profiles refused`);
  });
});
