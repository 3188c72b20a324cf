/**
 * Reconstruction levels of static groups (native/bitplan.h, fit_static_levels): on Gaussian
 * samples they match the closed form (each bin's conditional mean, all of a component's levels
 * scaled to a reconstruction gain of 1); on the sample the gain is 1 and no other gain-1
 * reconstruction of the same codes has less squared error, while the plain bin means (which have
 * the least of all, below the bins' midpoints) keep a gain below 1; the plan scores static
 * candidates with the levels (its reported error is the error of decoding with them); and a
 * calibrated profile's decoder reconstructs static coefficients at the levels.
 */
import '../helpers/f32-decode.js'; // first: this file compares against the FP32 decoder's exact results
import { describe, expect, it } from 'vitest';
import { calibrate, CodecProfile, decode, encode, type KvCache, type KvLayout } from '../../src/index.js';
import { native } from '../../src/binding.js';
import { rewriteLevels } from '../helpers/profile-levels.js';
import { gaussian, mulberry32, syntheticCache } from '../helpers/synthetic.js';

/** Φ, the standard normal CDF (Abramowitz–Stegun 7.1.26 for erf: |error| < 1.5e-7). */
function phiCdf(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}
const phiPdf = (z: number) => Math.exp(-0.5 * z * z) / Math.sqrt(2 * Math.PI);

/** n x k Gaussian projections, component c of standard deviation sigmas[c]. */
function gaussianSample(n: number, sigmas: number[], seed: number): Float32Array {
  const g = gaussian(mulberry32(seed));
  const out = new Float32Array(n * sigmas.length);
  for (let t = 0; t < n; t++) sigmas.forEach((s, c) => (out[t * sigmas.length + c] = s * g()));
  return out;
}

/** The encoder's code of x (quantize_group_static): clamp(rint((x - shift) / scale)). */
function codeOf(x: number, shift: number, scale: number, maxq: number): number {
  const v = Math.fround(Math.fround(x - shift) * Math.fround(1 / scale));
  let q = Math.round(v);
  if (Math.abs(v - Math.trunc(v)) === 0.5) q = 2 * Math.round(v / 2); // rint: half to even
  return Math.min(maxq, Math.max(0, q));
}

describe('static-group reconstruction levels', () => {
  const N = 60000;
  const sigmas = [1, 0.6];
  const bits = 2;
  const scale = 1;
  const shift = -1.5; // midrise: thresholds at -1, 0, 1
  const sample = gaussianSample(N, sigmas, 3);
  const levels = native.internals.staticLevels(sample, N, sigmas.length, bits, shift, scale);
  const nl = 1 << bits;

  it('match the closed form on Gaussian samples: bin means scaled to gain 1', () => {
    expect(levels.length).toBe(sigmas.length * nl);
    sigmas.forEach((s, c) => {
      // Bins of code q: (t_q, t_{q+1}) with t = -inf, -1, 0, 1, inf (in units of s: z = t / s).
      const t = [-Infinity, -1, 0, 1, Infinity].map((v) => v / s);
      const mass = [0, 1, 2, 3].map((q) => phiCdf(t[q + 1]!) - phiCdf(t[q]!));
      const mean = [0, 1, 2, 3].map((q) => (s * (phiPdf(t[q]!) - phiPdf(t[q + 1]!))) / mass[q]!);
      const gain = (s * s) / mean.reduce((a, m, q) => a + mass[q]! * m * m, 0);
      for (let q = 0; q < nl; q++) expect(levels[c * nl + q]!, `component ${c}, code ${q}`).toBeCloseTo(mean[q]! * gain, 1);
      // Well inside the sampling error of ~60000 values: within 2% of the component's sigma.
      for (let q = 0; q < nl; q++) expect(Math.abs(levels[c * nl + q]! - mean[q]! * gain)).toBeLessThan(0.02 * s);
    });
  });

  /** Per component: [Σ x̂·x / Σ x², Σ (x − x̂)²] of the sample decoded with these levels. */
  function decodeStats(lv: ArrayLike<number>): { gain: number; err: number }[] {
    return sigmas.map((_, c) => {
      let xx = 0;
      let xr = 0;
      let err = 0;
      for (let t = 0; t < N; t++) {
        const x = sample[t * sigmas.length + c]!;
        const r = Math.fround(lv[c * nl + codeOf(x, shift, scale, nl - 1)]!);
        xx += x * x;
        xr += x * r;
        err += (x - r) ** 2;
      }
      return { gain: xr / xx, err };
    });
  }

  it('give the sample a reconstruction gain of 1, with less error than any other gain-1 reconstruction of the same codes', () => {
    const ours = decodeStats(levels);
    for (const o of ours) expect(o.gain).toBeCloseTo(1, 5);
    // Midpoints, and random perturbations of the levels, each rescaled to gain 1: never better.
    const rescaled = (lv: number[]) => {
      const st = decodeStats(lv);
      return lv.map((v, i) => v / st[Math.floor(i / nl)]!.gain);
    };
    const mids = sigmas.flatMap(() => [0, 1, 2, 3].map((q) => shift + q * scale));
    const rnd = mulberry32(11);
    const candidates = [mids, ...Array.from({ length: 6 }, () => Array.from(levels, (v) => v + 0.1 * (rnd() - 0.5)))];
    for (const cand of candidates) {
      const st = decodeStats(rescaled(cand));
      st.forEach((s, c) => {
        expect(s.gain).toBeCloseTo(1, 4);
        expect(ours[c]!.err).toBeLessThanOrEqual(s.err * (1 + 1e-6));
      });
    }
  });

  it('the bin means themselves (gain below 1) have the least squared error, below the midpoints: the shrinkage the levels undo', () => {
    const means = sigmas.flatMap((_, c) => {
      const sum = new Float64Array(nl);
      const cnt = new Float64Array(nl);
      for (let t = 0; t < N; t++) {
        const x = sample[t * sigmas.length + c]!;
        const q = codeOf(x, shift, scale, nl - 1);
        sum[q]! += x;
        cnt[q]!++;
      }
      return Array.from(sum, (s, q) => s / cnt[q]!);
    });
    const mids = sigmas.flatMap(() => [0, 1, 2, 3].map((q) => shift + q * scale));
    const m = decodeStats(means);
    const mid = decodeStats(mids);
    const ours = decodeStats(levels);
    sigmas.forEach((_, c) => {
      expect(m[c]!.err).toBeLessThan(mid[c]!.err);
      expect(m[c]!.err).toBeLessThanOrEqual(ours[c]!.err);
      expect(m[c]!.gain).toBeLessThan(0.99);
    });
  });

  it('the plan scores static groups with their levels: its error is the error of decoding the sample with them', () => {
    const K = 24;
    const sig = Array.from({ length: K }, (_, c) => 3 * 0.9 ** c);
    const n = 3000;
    const proj = gaussianSample(n, sig, 5);
    let checked = 0;
    for (const budget of [20, 40, 80]) {
      const plan = native.internals.planBits(proj, n, K, budget, [1, 2, 3, 4, 5, 6, 8], [1, 16, 64], true, true);
      expect(plan.groups.every((g) => g.quantizer === 'static'), `budget ${budget}`).toBe(true);
      let err = 0;
      const coded = new Set<number>();
      for (const g of plan.groups) {
        const maxq = 2 ** g.bits - 1;
        if (g.bits <= 4) {
          expect(g.levels?.length).toBe(g.size << g.bits);
          // The same levels as the estimator gives for these columns.
          const cols = new Float32Array(n * g.size);
          for (let t = 0; t < n; t++) for (let j = 0; j < g.size; j++) cols[t * g.size + j] = proj[t * K + g.start + j]!;
          expect(g.levels).toEqual(native.internals.staticLevels(cols, n, g.size, g.bits, g.shift!, g.scale!));
          checked++;
        } else {
          expect(g.levels).toBeUndefined();
        }
        for (let j = 0; j < g.size; j++) {
          coded.add(g.start + j);
          for (let t = 0; t < n; t++) {
            const x = proj[t * K + g.start + j]!;
            const q = codeOf(x, Math.fround(g.shift!), Math.fround(g.scale!), maxq);
            const r = g.levels ? g.levels[(j << g.bits) + q]! : Math.fround(Math.fround(g.shift!) + Math.fround(q * Math.fround(g.scale!)));
            err += (x - r) ** 2;
          }
        }
      }
      for (let c = 0; c < K; c++) if (!coded.has(c)) for (let t = 0; t < n; t++) err += proj[t * K + c]! ** 2;
      expect(plan.error / err, `budget ${budget}`).toBeCloseTo(1, 6);
    }
    expect(checked).toBeGreaterThan(0);
  });

  it('the decoder reconstructs at the levels: midpoint levels decode as a profile without levels, the fitted ones differently', async () => {
    const layout: KvLayout = { layers: 2, kvHeads: 2, headDim: 16, dtype: 'f32', rope: { theta: 10000, style: 'neox' } };
    const rich = (seed: number, tokens: number) => syntheticCache({ layout, tokens, seed, rank: 24, noise: 0.3 });
    const profile = await calibrate([1, 2, 3].map((s) => rich(s, 300)), { ratio: 8, windowTokens: 8 });
    expect(profile.groups.some((g) => g.plan.some((q) => q.levels))).toBe(true);
    const bytes = profile.toBytes();
    const none = CodecProfile.fromBytes(rewriteLevels(bytes, () => null));
    expect(none.groups.every((g) => g.plan.every((q) => q.levels === undefined))).toBe(true);
    const mids = CodecProfile.fromBytes(
      rewriteLevels(bytes, (g) => Float32Array.from(g.levels, (_, i) => Math.fround(g.shift + Math.fround((i % (1 << g.bits)) * g.scale)))),
    );
    const same = CodecProfile.fromBytes(rewriteLevels(bytes, (g) => g.levels));
    expect(same.toBytes()).toEqual(bytes);
    const cache = rich(9, 200);
    const blob = await encode(cache, profile);
    // Codes do not depend on the levels: every variant encodes the same blob, bar the fingerprint.
    const flat = (c: KvCache) => [...c.keys, ...c.values].flatMap((a) => Array.from(a as Float32Array));
    const a = flat(await decode(blob, profile));
    const b = flat(await decode(await encode(cache, none), none));
    const c = flat(await decode(await encode(cache, mids), mids));
    expect(c).toEqual(b);
    expect(a).not.toEqual(b);
    const x = flat(cache);
    const gain = (y: number[]) => y.reduce((s, v, i) => s + v * x[i]!, 0) / x.reduce((s, v) => s + v * v, 0);
    expect(Math.abs(gain(a) - 1)).toBeLessThan(0.05);
  });
});
