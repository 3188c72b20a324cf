/**
 * The bit plan and the whole-cache allocation (native/bitplan.h) on synthetic projections, and
 * the attention weights calibration estimates (native/calibrate.h, attention_weights) on
 * synthetic caches whose moments are known: one budget split over several stream groups spends
 * the budget, reduces to the per-stream plan for one group, never loses by getting more bits,
 * and follows the weights.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../../src/binding.js';
import { calibrate, type KvCache, type KvLayout } from '../../src/index.js';
import { gaussian, mulberry32 } from '../helpers/synthetic.js';

const N = 512;
const SIZES = [1, 16, 64];
const WIDTHS = [1, 2, 3, 4, 5, 6, 8];

/** n x k projections whose component c has standard deviation scale * decay^c. */
function projections(k: number, scale: number, decay: number, seed: number): Float32Array {
  const g = gaussian(mulberry32(seed));
  const out = new Float32Array(N * k);
  for (let t = 0; t < N; t++) for (let c = 0; c < k; c++) out[t * k + c] = g() * scale * decay ** c;
  return out;
}

const streams = [projections(64, 3, 0.93, 1), projections(64, 1, 0.97, 2), projections(32, 0.5, 0.9, 3)];
const kmaxs = [64, 64, 32];

describe('per-stream plan', () => {
  for (const entropy of [false, true]) {
    it(`${entropy ? 'entropy' : 'packed'} costs: one stream group under the allocation is the per-stream plan`, () => {
      for (const budget of [64, 200, 512]) {
        const own = native.internals.planBits(streams[0]!, N, 64, budget, WIDTHS, SIZES, entropy);
        const split = native.internals.planSplit([streams[0]!], N, [64], [1], budget, 8, [budget], WIDTHS, SIZES, entropy);
        expect(split.units[0]).toBe(Math.floor(budget / 8));
        expect(split.plans[0]!.groups).toEqual(own.groups);
        expect(split.plans[0]!.error).toBe(own.error);
        expect(own.costBits).toBeLessThanOrEqual(budget);
        expect(own.groups.length).toBeGreaterThan(0);
      }
    });
  }

  it('entropy costs are below the packed ones for the same plan, and buy lower error at the same budget', () => {
    const packed = native.internals.planBits(streams[0]!, N, 64, 256, WIDTHS, SIZES, false);
    const coded = native.internals.planBits(streams[0]!, N, 64, 256, WIDTHS, SIZES, true);
    expect(packed.costBits).toBe(packed.bitsPerToken);
    expect(coded.costBits).toBeLessThan(coded.bitsPerToken);
    expect(coded.error).toBeLessThan(packed.error);
  });
});

describe('whole-cache allocation', () => {
  const weights = [1, 4, 2];
  const split = (total: number, w = weights, entropy = false) =>
    native.internals.planSplit(streams, N, kmaxs, w, total, 8, [total, total, total], WIDTHS, SIZES, entropy);

  it('spends the budget: never more, and less only by under the cheapest group (40 bits, packed)', () => {
    for (const total of [120, 250, 400, 600]) {
      const s = split(total);
      const spent = s.plans.reduce((a, p) => a + p.bitsPerToken, 0);
      expect(spent, `budget ${total}`).toBeLessThanOrEqual(total);
      // A 1-component group at 1 bit costs 8 + 32 bits and would lower the error: the optimum
      // leaves less than that unspent (some stream still has uncoded components).
      expect(spent, `budget ${total}`).toBeGreaterThan(total - 40);
      expect(s.plans.some((p, i) => p.groups.reduce((a, g) => a + g.size, 0) < kmaxs[i]!)).toBe(true);
      // The objective is the weighted sum of the plans' own errors.
      const sum = s.plans.reduce((a, p, i) => a + weights[i]! * p.error, 0);
      expect(Math.abs(sum - s.objective)).toBeLessThanOrEqual(1e-9 * s.objective);
    }
  });

  it('is monotone: a larger budget never increases the weighted calibration error', () => {
    for (const [entropy, statics] of [[false, false], [true, false], [true, true]] as const) {
      let last = Infinity;
      for (let total = 40; total <= 1600; total += 56) {
        const o = native.internals.planSplit(streams, N, kmaxs, weights, total, 8, [total, total, total], WIDTHS, SIZES, entropy, statics).objective;
        expect(o, `budget ${total}`).toBeLessThanOrEqual(last);
        last = o;
      }
    }
  });

  it('beats equal per-stream budgets on the weighted error, and moves bits toward heavier weights', () => {
    const total = 960;
    const s = split(total);
    const equal = streams.map((p, i) => native.internals.planBits(p, N, kmaxs[i]!, total / 3, WIDTHS, SIZES, false));
    const eq = equal.reduce((a, p, i) => a + weights[i]! * p.error, 0);
    expect(s.objective).toBeLessThan(eq);
    const heavier = split(total, [1, 40, 2]);
    expect(heavier.units[1]!).toBeGreaterThan(s.units[1]!);
    expect(heavier.plans[1]!.error).toBeLessThan(s.plans[1]!.error);
  });
});

describe('static quantizers (entropy-coded uniform steps)', () => {
  /** n x k heavy-tailed (Laplace) projections whose component c has standard deviation scale * decay^c. */
  function laplace(k: number, scale: number, decay: number, seed: number): Float32Array {
    const r = mulberry32(seed);
    const out = new Float32Array(N * k);
    for (let t = 0; t < N; t++)
      for (let c = 0; c < k; c++) {
        const u = r() - 0.5;
        out[t * k + c] = (-Math.sign(u) * Math.log(1 - 2 * Math.abs(u)) * scale * decay ** c) / Math.SQRT2;
      }
    return out;
  }
  const K = 48;
  const heavy = laplace(K, 2, 0.92, 7);
  const midtread = (g: { shift?: number; scale?: number }) => {
    const z = -g.shift! / g.scale!;
    return Math.abs(z - Math.round(z)) < 1e-3;
  };

  it('hold the sample range: a midtread group below the widest width never clips, and each value is within half a step', () => {
    let checked = 0;
    for (const budget of [48, 120, 240, 400]) {
      const plan = native.internals.planBits(heavy, N, K, budget, WIDTHS, SIZES, true, true);
      expect(plan.costBits, `budget ${budget}`).toBeLessThanOrEqual(budget);
      for (const g of plan.groups) {
        if (g.quantizer !== 'static') continue;
        const shift = Math.fround(g.shift!);
        const scale = Math.fround(g.scale!);
        expect(scale).toBeGreaterThan(0);
        const maxq = 2 ** g.bits - 1;
        if (!midtread(g)) {
          // The other static design: the fixed-rate midrise quantizer of a narrow width, centred on zero.
          expect(g.bits).toBeLessThanOrEqual(2);
          expect(Math.abs(shift + (maxq / 2) * scale)).toBeLessThanOrEqual(1e-5 * scale * maxq);
          continue;
        }
        if (g.bits >= Math.max(...WIDTHS)) continue;  // the widest width may clip the finest steps
        for (let t = 0; t < N; t++)
          for (let c = g.start; c < g.start + g.size; c++) {
            const x = heavy[t * K + c]!;
            const q = Math.min(maxq, Math.max(0, Math.round((x - shift) / scale)));
            expect(Math.abs(x - (shift + q * scale)), `component ${c}, token ${t}`).toBeLessThanOrEqual(0.5 * scale * (1 + 1e-4));
            checked++;
          }
      }
    }
    expect(checked).toBeGreaterThan(N * 10);
  });

  it('buy lower error than min/max groups alone at the same entropy-coded budget, on heavy-tailed data', () => {
    for (const budget of [64, 160, 320]) {
      const withStatic = native.internals.planBits(heavy, N, K, budget, WIDTHS, SIZES, true, true);
      const minmaxOnly = native.internals.planBits(heavy, N, K, budget, WIDTHS, SIZES, true, false);
      expect(withStatic.groups.some((g) => g.quantizer === 'static'), `budget ${budget}`).toBe(true);
      expect(withStatic.error, `budget ${budget}`).toBeLessThan(minmaxOnly.error);
      expect(withStatic.costBits).toBeLessThanOrEqual(budget);
    }
  });

  it('respect the widths option: no static group takes a width the request does not allow', () => {
    const widths = [2, 4];
    const plan = native.internals.planBits(heavy, N, K, 200, widths, SIZES, true, true);
    expect(plan.groups.length).toBeGreaterThan(0);
    for (const g of plan.groups) expect(widths).toContain(g.bits);
  });
});

describe('attention weights from synthetic caches with known moments', () => {
  // Per layer: keys N(0, sk²) per element, values N(mu, sv²) per element; no RoPE.
  const layout: KvLayout = { layers: 2, kvHeads: 2, headDim: 16, dtype: 'f32' };
  const moments = [
    { sk: 2, sv: 0.5, mu: 0.3 },
    { sk: 0.7, sv: 1.5, mu: -1 },
  ];
  function cache(seed: number, tokens: number): KvCache {
    const g = gaussian(mulberry32(seed));
    const rv = layout.kvHeads * layout.headDim;
    const keys: Float32Array[] = [];
    const values: Float32Array[] = [];
    for (const m of moments) {
      const k = new Float32Array(tokens * rv);
      const v = new Float32Array(tokens * rv);
      for (let i = 0; i < k.length; i++) {
        k[i] = g() * m.sk;
        v[i] = m.mu + g() * m.sv;
      }
      keys.push(k);
      values.push(v);
    }
    return { layout, tokens, keys, values };
  }

  it('match w_V = 1/E|v|², w_K = s²·E|v−v̄|²/(E|v|²·E|k−k̄|²) per head, and the plan follows them', async () => {
    const profile = await calibrate([cache(11, 3000), cache(12, 3000)], { ratio: 6, windowTokens: 0, pcaGroupLayers: 1, threads: 1 });
    const d = layout.headDim;
    const s2 = 10; // kLogitVariance
    for (const [l, m] of moments.entries()) {
      const msv = d * (m.sv ** 2 + m.mu ** 2);
      const wV = 1 / msv;
      const wK = (s2 * d * m.sv ** 2) / (msv * d * m.sk ** 2);
      const k = profile.groups.find((g) => g.stream === 'keys' && g.layerStart === l)!;
      const v = profile.groups.find((g) => g.stream === 'values' && g.layerStart === l)!;
      expect(v.weight / wV, `layer ${l} values`).toBeGreaterThan(0.97);
      expect(v.weight / wV, `layer ${l} values`).toBeLessThan(1.03);
      expect(k.weight / wK, `layer ${l} keys`).toBeGreaterThan(0.95);
      expect(k.weight / wK, `layer ${l} keys`).toBeLessThan(1.05);
    }
    expect(profile.settings.allocation).toBe('global');
    expect(profile.settings.weighting).toBe('attention');
    // Weighted variance per element, w·σ²: keys s²·σv²/E|v|² against values σv²/E|v|², 10x more
    // in both layers, so the allocation gives the keys more bits than the values of each layer.
    const bits = (stream: string, l: number) => profile.groups.find((g) => g.stream === stream && g.layerStart === l)!.plannedBits;
    for (const l of [0, 1]) expect(bits('keys', l), `layer ${l}`).toBeGreaterThan(1.5 * bits('values', l));
  });
});
