/**
 * Baseline KV-cache quantizers and the Gaussian rate–distortion bound, for the codec benchmark.
 *
 * Each baseline simulates a known compression method on a KvCache: it computes the bytes the
 * method would store and the reconstruction it would give back, and reports the ratio against
 * the fp16 size and the relative MSE of keys and values, so kvtc can be compared at equal bytes
 * in the same run (DESIGN.md §6). Keys are quantized as stored (RoPE applied), as the original
 * methods do.
 */
import { f16BitsToF32, f32ToF16Bits, toFloat32 } from '../src/half.js';
import type { KvCache, KvLayout } from '../src/layout.js';

/** What one baseline stores and how close its reconstruction is. */
export interface BaselineResult {
  /** Short label for tables, e.g. 'int4-per-head' or 'kivi-2bit-g32'. */
  name: string;
  /** Bytes the method stores for the whole cache (keys and values, all layers, side data included). */
  bytes: number;
  /** Size of the cache in fp16: 2 · layers · tokens · kvHeads · headDim · 2 bytes; the reference for ratios. */
  rawBytesF16: number;
  /** rawBytesF16 / bytes. */
  ratio: number;
  /** Σ(k − k̂)² / Σk² over every key value, in float64. */
  relMseK: number;
  /** Σ(v − v̂)² / Σv² over every value-stream value, in float64. */
  relMseV: number;
  /**
   * The reconstructed cache (f32 layout, same shape and positions), for measures that need it,
   * such as next-token KL of a model continuing from it. Absent only where a caller builds a
   * result without one.
   */
  reconstructed?: KvCache;
}

/** A baseline method: simulate it on a cache. */
export type Baseline = (cache: KvCache) => BaselineResult;

/**
 * Relative MSE Σ(x − x̂)² / Σx² over all arrays together (float64 accumulation). Returns 0 for
 * an all-zero reference reproduced exactly and Infinity for any error on an all-zero reference.
 */
export function relMse(ref: Float32Array[], approx: Float32Array[]): number {
  if (ref.length !== approx.length) throw new Error(`relMse: ${ref.length} reference arrays but ${approx.length} approximations`);
  let err = 0;
  let energy = 0;
  for (let a = 0; a < ref.length; a++) {
    const x = ref[a]!;
    const y = approx[a]!;
    if (x.length !== y.length) throw new Error(`relMse: array ${a} has ${x.length} reference values but ${y.length} approximations`);
    for (let i = 0; i < x.length; i++) {
      const xi = x[i]!;
      const d = xi - y[i]!;
      err += d * d;
      energy += xi * xi;
    }
  }
  if (energy === 0) return err === 0 ? 0 : Infinity;
  return err / energy;
}

/** fp16 bytes of a cache shape: the common reference of every ratio. */
export function rawBytesF16(layout: KvLayout, tokens: number): number {
  return 2 * layout.layers * tokens * layout.kvHeads * layout.headDim * 2;
}

/** Rounds a value to the nearest fp16 (ties to even) and back: what storing it as fp16 keeps. */
function roundF16(x: number): number {
  return f16BitsToF32(f32ToF16Bits(x));
}

/**
 * Shared driver: converts each layer's K and V to f32, lets `quantize` produce the
 * reconstruction, and assembles the result. `quantize` receives one layer's token-major array
 * [tokens][kvHeads][headDim] and which stream it is.
 */
function simulate(
  name: string,
  cache: KvCache,
  bytes: number,
  quantize: (x: Float32Array, stream: 'k' | 'v') => Float32Array,
): BaselineResult {
  const { layout } = cache;
  const refK: Float32Array[] = [];
  const refV: Float32Array[] = [];
  const recK: Float32Array[] = [];
  const recV: Float32Array[] = [];
  for (let l = 0; l < layout.layers; l++) {
    const k = toFloat32(cache.keys[l]!, layout.dtype);
    const v = toFloat32(cache.values[l]!, layout.dtype);
    refK.push(k);
    refV.push(v);
    recK.push(quantize(k, 'k'));
    recV.push(quantize(v, 'v'));
  }
  const raw = rawBytesF16(layout, cache.tokens);
  const reconstructed: KvCache = {
    layout: { ...layout, dtype: 'f32' },
    tokens: cache.tokens,
    keys: recK,
    values: recV,
    ...(cache.positions ? { positions: cache.positions } : {}),
  };
  return { name, bytes, rawBytesF16: raw, ratio: raw / bytes, relMseK: relMse(refK, recK), relMseV: relMse(refV, recV), reconstructed };
}

/** Total K+V values of a cache. */
function valueCount(cache: KvCache): number {
  const { layout } = cache;
  return 2 * layout.layers * cache.tokens * layout.kvHeads * layout.headDim;
}

/** Stores every value as fp16: ratio 1, error from fp16 rounding only (none for f16 input). */
export const fp16: Baseline = (cache) =>
  simulate('fp16', cache, rawBytesF16(cache.layout, cache.tokens), (x) => {
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = roundF16(x[i]!);
    return out;
  });

// The 127 non-negative finite E4M3 (OCP "FN": bias 7, no infinities, S.1111.111 = NaN) values in
// code order, so a value's code is its index and "ties to even" means "ties to the even index".
const E4M3_MAX = 448;
const E4M3_VALUES: Float64Array = (() => {
  const v = new Float64Array(127);
  for (let code = 0; code < 127; code++) {
    const e = code >>> 3;
    const m = code & 7;
    v[code] = e === 0 ? m * 2 ** -9 : (1 + m / 8) * 2 ** (e - 7);
  }
  return v;
})();

/**
 * Rounds to the nearest FP8 E4M3 value, ties to even, saturating at ±448 (no infinities).
 * Exported for tests.
 */
export function e4m3Round(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const a = Math.abs(x);
  if (a >= E4M3_MAX) return Math.sign(x) * E4M3_MAX;
  // Largest index with value ≤ a (binary search over the sorted table).
  let lo = 0;
  let hi = 126;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (E4M3_VALUES[mid]! <= a) lo = mid;
    else hi = mid - 1;
  }
  const below = E4M3_VALUES[lo]!;
  let r = below;
  if (below !== a) {
    const above = E4M3_VALUES[lo + 1]!;
    const dBelow = a - below;
    const dAbove = above - a;
    if (dAbove < dBelow || (dAbove === dBelow && (lo & 1) === 1)) r = above;
  }
  return x < 0 ? -r : r;
}

/**
 * FP8 E4M3 with one f32 scale per tensor (K or V) per layer: scale = absmax / 448, values
 * rounded to nearest even and saturated at ±448. Bytes: 1 per value + 4 per scale.
 */
export const fp8: Baseline = (cache) => {
  const bytes = valueCount(cache) + 4 * 2 * cache.layout.layers;
  return simulate('fp8-e4m3', cache, bytes, (x) => {
    let absmax = 0;
    for (let i = 0; i < x.length; i++) absmax = Math.max(absmax, Math.abs(x[i]!));
    const out = new Float32Array(x.length);
    if (absmax === 0) return out;
    const scale = Math.fround(absmax / E4M3_MAX); // the stored f32 scale
    for (let i = 0; i < x.length; i++) out[i] = e4m3Round(x[i]! / scale) * scale;
    return out;
  });
};

/** The fp16-stored version of a non-negative scale, kept finite so reconstruction stays finite. */
function f16Scale(s: number): number {
  const r = roundF16(s);
  return Number.isFinite(r) ? r : 65504;
}

/**
 * Symmetric absmax quantization per (token, head) vector of headDim values to `bits`-bit signed
 * integers in [−(2^(bits−1) − 1), 2^(bits−1) − 1], one fp16 scale per vector.
 */
function intPerHead(bits: number): Baseline {
  const qmax = 2 ** (bits - 1) - 1;
  return (cache) => {
    const { kvHeads, headDim, layers } = cache.layout;
    const scales = 2 * layers * cache.tokens * kvHeads;
    const bytes = (valueCount(cache) * bits) / 8 + 2 * scales;
    return simulate(`int${bits}-per-head`, cache, bytes, (x) => {
      const out = new Float32Array(x.length);
      for (let base = 0; base < x.length; base += headDim) {
        let absmax = 0;
        for (let j = 0; j < headDim; j++) absmax = Math.max(absmax, Math.abs(x[base + j]!));
        const scale = f16Scale(absmax / qmax);
        if (scale === 0) continue; // all zeros (or below fp16 range): reconstruct as zeros
        for (let j = 0; j < headDim; j++) {
          // The fp16 scale may be a hair below absmax/qmax, hence the clamp.
          const q = Math.min(qmax, Math.max(-qmax, Math.round(x[base + j]! / scale)));
          out[base + j] = q * scale;
        }
      }
      return out;
    });
  };
}

/** int8 symmetric per (token, head), fp16 scale: bytes = values + 2 per (token, head). */
export const int8PerHead: Baseline = intPerHead(8);
/** int4 symmetric per (token, head), fp16 scale: bytes = values/2 + 2 per (token, head). */
export const int4PerHead: Baseline = intPerHead(4);

/**
 * Asymmetric min/max quantization of `n` values at x[start + i·stride] into `out` with an fp16
 * scale and fp16 zero point (the group minimum), as KIVI stores them.
 */
function quantizeGroup(x: Float32Array, out: Float32Array, start: number, stride: number, n: number, levels: number): void {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0, p = start; i < n; i++, p += stride) {
    const v = x[p]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const zero = roundF16(min);
  const scale = f16Scale((max - min) / levels);
  for (let i = 0, p = start; i < n; i++, p += stride) {
    const q = scale === 0 ? 0 : Math.min(levels, Math.max(0, Math.round((x[p]! - zero) / scale)));
    out[p] = q * scale + zero;
  }
}

/**
 * KIVI-style asymmetric quantization (Liu et al. 2024): keys per channel, values per token.
 *
 * - Keys: for each channel (head, dim), groups of `groupSize` consecutive tokens share an fp16
 *   scale and zero (min). Only whole groups are quantized: the last `tokens % groupSize` tokens
 *   — more precisely everything after the largest multiple of `groupSize` that leaves the
 *   `residual` most recent tokens out — stay in fp16, as in KIVI's streaming residual.
 * - Values: for each token, groups of `groupSize` consecutive channels within a head (the last
 *   group of a head is shorter when headDim % groupSize ≠ 0) share an fp16 scale and zero; the
 *   `residual` most recent tokens stay in fp16.
 *
 * Bytes: quantized values · bits/8 + 4 per group (fp16 scale + zero) + 2 per fp16 value.
 */
export function kivi(bits: 2 | 4, groupSize = 32, residual = 0): Baseline {
  if (!Number.isInteger(groupSize) || groupSize <= 0) throw new Error(`kivi: groupSize must be a positive integer, got ${groupSize}`);
  if (!Number.isInteger(residual) || residual < 0) throw new Error(`kivi: residual must be a non-negative integer, got ${residual}`);
  const levels = 2 ** bits - 1;
  return (cache) => {
    const { layers, kvHeads, headDim } = cache.layout;
    const n = cache.tokens;
    const C = kvHeads * headDim; // channels per token
    const quantizable = Math.max(0, n - residual);
    const nK = Math.floor(quantizable / groupSize) * groupSize; // keys quantized in whole token groups
    const nV = quantizable;
    const groupsPerHeadV = Math.ceil(headDim / groupSize);
    const bytesK = (nK * C * bits) / 8 + (nK / groupSize) * C * 4 + (n - nK) * C * 2;
    const bytesV = (nV * C * bits) / 8 + nV * kvHeads * groupsPerHeadV * 4 + (n - nV) * C * 2;
    const bytes = layers * (bytesK + bytesV);
    const name = `kivi-${bits}bit-g${groupSize}${residual > 0 ? `-r${residual}` : ''}`;
    return simulate(name, cache, bytes, (x, stream) => {
      const out = new Float32Array(x.length);
      if (stream === 'k') {
        for (let t0 = 0; t0 < nK; t0 += groupSize) {
          for (let c = 0; c < C; c++) quantizeGroup(x, out, t0 * C + c, C, groupSize, levels);
        }
        for (let i = nK * C; i < x.length; i++) out[i] = roundF16(x[i]!);
      } else {
        for (let t = 0; t < nV; t++) {
          for (let h = 0; h < kvHeads; h++) {
            const base = t * C + h * headDim;
            for (let d0 = 0; d0 < headDim; d0 += groupSize) {
              quantizeGroup(x, out, base + d0, 1, Math.min(groupSize, headDim - d0), levels);
            }
          }
        }
        for (let i = nV * C; i < x.length; i++) out[i] = roundF16(x[i]!);
      }
      return out;
    });
  };
}

/** Result of reverse water-filling. */
export interface RdBound {
  /** Minimum bits per vector (summed over all components) to reach the distortion. */
  bitsPerComponentTotal: number;
  /** The water level θ: components with variance ≤ θ are dropped, the others get error θ each. */
  theta: number;
}

/**
 * Gaussian rate–distortion bound by reverse water-filling (Cover & Thomas, thm. 10.3.3): for
 * independent Gaussian components with variances λᵢ (the PCA eigenvalues) and a total
 * squared-error budget D per vector (same units as λ), find θ with Σ min(θ, λᵢ) = D; then
 * R(D) = Σ_{λᵢ > θ} ½·log₂(λᵢ/θ) bits per vector. Divide by the dimension for bits per value.
 *
 * θ is solved exactly: Σ min(θ, λᵢ) is piecewise linear in θ, so after sorting λ the segment
 * holding D gives θ in closed form (no bisection tolerance to worry about).
 *
 * Edge cases: negative eigenvalues (round-off) count as 0; D ≥ Σλ needs 0 bits (θ reported as
 * max λ, the smallest level that drops everything); D ≤ 0 needs infinite bits (θ = 0) unless
 * every λ is 0.
 */
export function gaussianRdBound(eigenvalues: Float64Array | Float32Array, distortion: number): RdBound {
  const lambda = Float64Array.from(eigenvalues, (v) => (v > 0 ? v : 0)).sort();
  const n = lambda.length;
  const total = lambda.reduce((s, v) => s + v, 0);
  const maxLambda = n > 0 ? lambda[n - 1]! : 0;
  if (Number.isNaN(distortion)) throw new Error('gaussianRdBound: distortion is NaN');
  if (distortion >= total) return { bitsPerComponentTotal: 0, theta: maxLambda };
  if (distortion <= 0) return { bitsPerComponentTotal: Infinity, theta: 0 };
  // With the k smallest below the water level: Σ min(θ, λ) = S_k + (n − k)·θ on [λ_{k−1}, λ_k].
  let theta = maxLambda;
  let below = 0; // S_k
  for (let k = 0; k < n; k++) {
    const t = (distortion - below) / (n - k);
    if (t <= lambda[k]!) {
      theta = t;
      break;
    }
    below += lambda[k]!;
  }
  let bits = 0;
  for (let i = 0; i < n; i++) if (lambda[i]! > theta) bits += 0.5 * Math.log2(lambda[i]! / theta);
  return { bitsPerComponentTotal: bits, theta };
}

/**
 * The RD bound at a measured relative MSE. relMse = Σₜ‖xₜ − x̂ₜ‖² / Σₜ‖xₜ‖², so the mean squared
 * error per vector is
 *
 *     D = relMse · meanSquare,   meanSquare = (1/T) Σₜ ‖xₜ‖²
 *
 * (uncentered: that is what relMse divides by). The eigenvalues are of the centered covariance;
 * that is consistent, because the mean is known to the decoder and costs no bits, so the error on
 * x equals the error on x − µ.
 */
export function gaussianRdBoundAtRelMse(eigenvalues: Float64Array | Float32Array, relMse: number, meanSquare: number): RdBound {
  return gaussianRdBound(eigenvalues, relMse * meanSquare);
}
