import { describe, expect, it } from 'vitest';
import {
  e4m3Round,
  fp16,
  fp8,
  gaussianRdBound,
  gaussianRdBoundAtRelMse,
  int4PerHead,
  int8PerHead,
  kivi,
  relMse,
} from '../../bench/baselines.js';
import { fromFloat32 } from '../../src/half.js';
import type { KvCache } from '../../src/layout.js';
import { mulberry32 } from '../helpers/synthetic.js';


/** Standard normal samples (Box–Muller) from a seeded uniform source. */
function gaussian(rnd: () => number): () => number {
  return () => {
    const u = 1 - rnd(); // (0, 1], keeps log finite
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rnd());
  };
}

const LAYERS = 2;
const HEADS = 2;
const DIM = 64;

/** Synthetic f32 cache: Gaussian values; keys get per-channel scales (KV-like outlier channels). */
function syntheticCache(tokens = 256, seed = 42): KvCache {
  const g = gaussian(mulberry32(seed));
  const C = HEADS * DIM;
  const chanScale = Array.from({ length: C }, (_, c) => (c % 17 === 0 ? 8 : 0.5 + (c % 5) / 4));
  const keys: Float32Array[] = [];
  const values: Float32Array[] = [];
  for (let l = 0; l < LAYERS; l++) {
    const k = new Float32Array(tokens * C);
    const v = new Float32Array(tokens * C);
    for (let i = 0; i < k.length; i++) {
      k[i] = g() * chanScale[i % C]!;
      v[i] = g();
    }
    keys.push(k);
    values.push(v);
  }
  return { layout: { layers: LAYERS, kvHeads: HEADS, headDim: DIM, dtype: 'f32' }, tokens, keys, values };
}

const cache = syntheticCache();
const RAW = 2 * LAYERS * 256 * HEADS * DIM * 2;

describe('relMse', () => {
  it('sums errors and energies over all arrays', () => {
    const ref = [new Float32Array([1, 2]), new Float32Array([2])];
    const approx = [new Float32Array([1, 1]), new Float32Array([4])];
    expect(relMse(ref, approx)).toBeCloseTo((0 + 1 + 4) / (1 + 4 + 4), 12);
    expect(relMse([new Float32Array(2)], [new Float32Array(2)])).toBe(0);
    expect(relMse([new Float32Array(2)], [new Float32Array([0, 1])])).toBe(Infinity);
  });
});

describe('fp16', () => {
  it('has ratio 1 and only rounding error', () => {
    const r = fp16(cache);
    expect(r.rawBytesF16).toBe(RAW);
    expect(r.bytes).toBe(RAW);
    expect(r.ratio).toBe(1);
    expect(r.relMseK).toBeGreaterThan(0);
    expect(r.relMseK).toBeLessThan(1e-6);
    expect(r.relMseV).toBeLessThan(1e-6);
  });

  it('is lossless on an f16 cache and reconstructs in the same shape', () => {
    const half: KvCache = {
      ...cache,
      layout: { ...cache.layout, dtype: 'f16' },
      keys: cache.keys.map((a) => fromFloat32(a as Float32Array, 'f16')),
      values: cache.values.map((a) => fromFloat32(a as Float32Array, 'f16')),
    };
    const r = fp16(half);
    expect(r.relMseK).toBe(0);
    expect(r.relMseV).toBe(0);
    expect(r.reconstructed?.layout.dtype).toBe('f32');
    expect((r.reconstructed?.keys[1] as Float32Array).length).toBe(256 * HEADS * DIM);
  });
});

describe('fp8 (E4M3)', () => {
  it('rounds to E4M3 values with ties to even and saturates at 448', () => {
    expect(e4m3Round(1)).toBe(1);
    expect(e4m3Round(1.0625)).toBe(1); // tie between 1 and 1.125 → even mantissa
    expect(e4m3Round(1.1875)).toBe(1.25); // tie between 1.125 and 1.25 → even
    expect(e4m3Round(-1.2)).toBe(-1.25);
    expect(e4m3Round(448)).toBe(448);
    expect(e4m3Round(460)).toBe(448);
    expect(e4m3Round(1e9)).toBe(448);
    expect(e4m3Round(-1e9)).toBe(-448);
    expect(e4m3Round(2 ** -9)).toBe(2 ** -9); // smallest subnormal
    expect(e4m3Round(2 ** -10)).toBe(0); // tie → even (0)
    expect(e4m3Round(1.5 * 2 ** -10)).toBe(2 ** -9);
    expect(e4m3Round(0.0155)).toBe(0.015625); // 2^-6, smallest normal
  });

  it('ratio ≈ 2 and a plausible error', () => {
    const r = fp8(cache);
    expect(r.bytes).toBe(RAW / 2 + 4 * 2 * LAYERS);
    expect(r.ratio).toBeCloseTo(RAW / (RAW / 2 + 16), 12);
    for (const e of [r.relMseK, r.relMseV]) {
      expect(e).toBeGreaterThan(1e-4);
      expect(e).toBeLessThan(1e-2);
    }
  });
});

describe('int8 / int4 per head', () => {
  it('bytes follow the formula; int8 beats int4', () => {
    const r8 = int8PerHead(cache);
    const r4 = int4PerHead(cache);
    const values = 2 * LAYERS * 256 * HEADS * DIM;
    const scales = 2 * LAYERS * 256 * HEADS;
    expect(r8.bytes).toBe(values + 2 * scales);
    expect(r4.bytes).toBe(values / 2 + 2 * scales);
    expect(r4.ratio).toBeCloseTo(16 / (4 + 16 / 64), 12); // ≈ 3.76
    expect(r8.ratio).toBeCloseTo(16 / (8 + 16 / 64), 12);
    expect(r8.relMseK).toBeLessThan(r4.relMseK);
    expect(r8.relMseV).toBeLessThan(r4.relMseV);
    expect(r8.relMseV).toBeLessThan(1e-3); // Gaussian values
    expect(r8.relMseK).toBeLessThan(1e-3);
    expect(r4.relMseV).toBeGreaterThan(1e-3);
    expect(r4.relMseV).toBeLessThan(5e-2);
  });

  it('keeps all-zero vectors exactly', () => {
    const zeros: KvCache = { ...cache, keys: cache.keys.map((a) => new Float32Array((a as Float32Array).length)) };
    expect(int4PerHead(zeros).relMseK).toBe(0);
  });
});

describe('kivi', () => {
  it('bytes follow the formula with whole groups', () => {
    const C = HEADS * DIM;
    const r = kivi(2)(cache);
    // 256 tokens = 8 token groups of 32 for K; V: 2 channel groups per head per token.
    const k = (256 * C * 2) / 8 + 8 * C * 4;
    const v = (256 * C * 2) / 8 + 256 * HEADS * 2 * 4;
    expect(r.bytes).toBe(LAYERS * (k + v));
    expect(r.ratio).toBeCloseTo(RAW / (LAYERS * (k + v)), 12);
    expect(r.name).toBe('kivi-2bit-g32');
  });

  it('keeps the token tail and the residual window in fp16', () => {
    const c = syntheticCache(100, 7);
    const C = HEADS * DIM;
    const r = kivi(4, 32, 10)(c);
    // K: 90 quantizable tokens → 2 whole groups (64 tokens), 36 tokens fp16. V: 90 quantized, 10 fp16.
    const k = (64 * C * 4) / 8 + 2 * C * 4 + 36 * C * 2;
    const v = (90 * C * 4) / 8 + 90 * HEADS * 2 * 4 + 10 * C * 2;
    expect(r.bytes).toBe(LAYERS * (k + v));
    // The fp16 tail is reproduced to fp16 precision.
    const rk = r.reconstructed!.keys[0] as Float32Array;
    const xk = c.keys[0] as Float32Array;
    for (let i = 64 * C; i < 100 * C; i++) expect(Math.abs(rk[i]! - xk[i]!)).toBeLessThanOrEqual(Math.abs(xk[i]!) * 2 ** -11);
  });

  it('2-bit has a larger error than 4-bit', () => {
    const r2 = kivi(2)(cache);
    const r4 = kivi(4)(cache);
    expect(r2.relMseK).toBeGreaterThan(r4.relMseK);
    expect(r2.relMseV).toBeGreaterThan(r4.relMseV);
    expect(r2.ratio).toBeGreaterThan(r4.ratio);
    expect(r4.relMseV).toBeLessThan(0.05);
    expect(r2.relMseV).toBeLessThan(0.5);
  });

  it('handles value groups that do not divide headDim', () => {
    const r = kivi(4, 24)(cache); // 64 = 24 + 24 + 16
    expect(Number.isFinite(r.relMseV)).toBe(true);
    const C = HEADS * DIM;
    const k = (240 * C * 4) / 8 + 10 * C * 4 + 16 * C * 2; // 256 = 10·24 + 16
    const v = (256 * C * 4) / 8 + 256 * HEADS * 3 * 4;
    expect(r.bytes).toBe(LAYERS * (k + v));
  });
});

describe('Gaussian rate–distortion bound', () => {
  it('λ = [4, 1], D = 0.5 → θ = 0.25, R = 3 bits', () => {
    const r = gaussianRdBound(new Float64Array([4, 1]), 0.5);
    expect(r.theta).toBeCloseTo(0.25, 12);
    expect(r.bitsPerComponentTotal).toBeCloseTo(0.5 * Math.log2(16) + 0.5 * Math.log2(4), 12);
  });

  it('drops components below the water level', () => {
    // D = 2.5: θ = 1.5 > λ₂ = 1 → 1 + θ = 2.5; R = ½·log₂(4/1.5).
    const r = gaussianRdBound(new Float32Array([1, 4]), 2.5);
    expect(r.theta).toBeCloseTo(1.5, 12);
    expect(r.bitsPerComponentTotal).toBeCloseTo(0.5 * Math.log2(4 / 1.5), 12);
  });

  it('D ≥ Σλ needs no bits; D → 0 needs unbounded bits', () => {
    const lambda = new Float64Array([4, 1]);
    expect(gaussianRdBound(lambda, 5).bitsPerComponentTotal).toBe(0);
    expect(gaussianRdBound(lambda, 50).bitsPerComponentTotal).toBe(0);
    expect(gaussianRdBound(lambda, 0).bitsPerComponentTotal).toBe(Infinity);
    expect(gaussianRdBound(lambda, 1e-12).bitsPerComponentTotal).toBeGreaterThan(35);
  });

  it('is monotone decreasing in D', () => {
    const rnd = mulberry32(9);
    const lambda = new Float64Array(64).map((_, i) => Math.exp(-i / 8) * (0.5 + rnd()));
    const total = lambda.reduce((s, v) => s + v, 0);
    let prev = Infinity;
    for (let i = 1; i <= 200; i++) {
      const r = gaussianRdBound(lambda, (total * i) / 200);
      expect(r.bitsPerComponentTotal).toBeLessThanOrEqual(prev);
      if (i < 200) expect(r.bitsPerComponentTotal).toBeLessThan(prev);
      // The water level meets the budget exactly.
      const d = lambda.reduce((s, v) => s + Math.min(v, r.theta), 0);
      expect(d).toBeCloseTo((total * i) / 200, 10);
      prev = r.bitsPerComponentTotal;
    }
    expect(prev).toBe(0);
  });

  it('at a relative MSE uses D = relMse · meanSquare', () => {
    const lambda = new Float64Array([4, 1]);
    const a = gaussianRdBoundAtRelMse(lambda, 0.1, 5);
    const b = gaussianRdBound(lambda, 0.5);
    expect(a.bitsPerComponentTotal).toBeCloseTo(b.bitsPerComponentTotal, 12);
    expect(a.theta).toBeCloseTo(b.theta, 12);
  });
});
