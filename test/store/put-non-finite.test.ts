/**
 * nonFinite 'reject': a put's cache is checked for NaN/Inf as the store copies it (one pass, in
 * 64 KiB blocks). The first non-finite value is named exactly — wherever it falls against the
 * blocks, in every dtype — finite extremes pass, and a refused put leaves the session as it was.
 */
import { describe, expect, it } from 'vitest';
import type { KvCache, KvStore, KvtcError } from '../../src/index.js';
import { bufferPool } from '../../src/internal/testing.js';
import { LAYOUT, sameBits, session, storeKit } from '../helpers/store.js';
import { withDtype } from '../helpers/synthetic.js';

const { openStore } = storeKit();

function open(nonFinite: 'reject' | 'store'): Promise<KvStore> {
  return openStore({ nonFinite, workers: { minThreads: 1, maxThreads: 1 } });
}

const ROW = LAYOUT.kvHeads * LAYOUT.headDim;
const TOKENS = 1200; // f32: 512 tokens per 64 KiB block, so a layer spans three blocks
const BITS = {
  f32: { nan: 0x7fc00000, inf: 0x7f800000, max: 0x7f7fffff, negZero: 0x80000000, sub: 0x00000001 },
  f16: { nan: 0x7e00, inf: 0xfc00, max: 0x7bff, negZero: 0x8000, sub: 0x0001 },
  bf16: { nan: 0x7fc0, inf: 0xff80, max: 0xff7f, negZero: 0x8000, sub: 0x0001 },
} as const;

function poke(c: KvCache, stream: 'keys' | 'values', layer: number, element: number, bits: number): void {
  const a = c[stream][layer]!;
  if (c.layout.dtype === 'f32') new Uint32Array(a.buffer, a.byteOffset, (a as Float32Array).length)[element] = bits;
  else (a as Uint16Array)[element] = bits;
}

describe("put with nonFinite: 'reject'", () => {
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    it(`names the first NaN/Inf of a ${dtype} cache wherever it falls; finite extremes pass`, async () => {
      const store = await open('reject');
      const base = withDtype(session(3, TOKENS), dtype);
      await store.put('s', base);
      const b = BITS[dtype];
      // Finite extremes (largest magnitude, -0, the smallest subnormal) everywhere: accepted.
      const extremes = withDtype(session(4, TOKENS), dtype);
      for (const [i, bits] of [b.max, b.negZero, b.sub].entries()) {
        poke(extremes, 'keys', 0, i, bits);
        poke(extremes, 'values', LAYOUT.layers - 1, TOKENS * ROW - 1 - i, bits);
      }
      await store.put('x', extremes);
      expect(sameBits((await store.get('x'))!, extremes)).toBe(true);
      const perBlock = (64 * 1024) / (dtype === 'f32' ? 4 : 2);
      const cases: { stream: 'keys' | 'values'; layer: number; element: number; bits: number }[] = [
        { stream: 'keys', layer: 0, element: 0, bits: b.nan },
        { stream: 'keys', layer: 1, element: perBlock - 1, bits: b.inf },
        { stream: 'values', layer: 0, element: perBlock, bits: b.nan },
        { stream: 'values', layer: 1, element: TOKENS * ROW - 1, bits: b.inf },
      ];
      for (const k of cases) {
        const bad = withDtype(session(5, TOKENS), dtype);
        poke(bad, k.stream, k.layer, k.element, k.bits);
        // A later one too: the first is reported.
        poke(bad, 'values', 1, TOKENS * ROW - 1, b.nan);
        const err = (await store.put('s', bad).catch((e: KvtcError) => e)) as KvtcError;
        const token = Math.floor(k.element / ROW);
        expect(err).toMatchObject({ code: 'E_LAYOUT', message: expect.stringContaining(`cache.${k.stream}[${k.layer}] holds NaN or Inf at token ${token}`) });
        // The session is still its previous version.
        expect(sameBits((await store.get('s'))!, base)).toBe(true);
      }
      await store.settled();
      // The refused copies went back to the pool (every later put could reuse one).
      expect(bufferPool(store).counts.recycled).toBeGreaterThanOrEqual(cases.length);
    });
  }

  it("nonFinite 'store' keeps such a cache bit for bit", async () => {
    const store = await open('store');
    const c = withDtype(session(6, TOKENS), 'f16');
    poke(c, 'values', 1, 77, BITS.f16.nan);
    await store.put('n', c);
    expect(sameBits((await store.get('n'))!, c)).toBe(true);
  });
});
