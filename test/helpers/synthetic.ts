/**
 * Synthetic KV caches with the structure real ones have: a few strong directions shared across
 * heads and layers (low rank + noise), per-channel offsets, and RoPE applied to the keys by
 * absolute position. Seeded, so every test sees the same data.
 */
import type { DType, KvCache, KvLayout } from '../../src/layout.js';
import { ropeFreqs } from '../../src/layout.js';
import { fromFloat32 } from '../../src/half.js';
import { mulberry32 } from './prng.mjs';

export { mulberry32 };

export function gaussian(rand: () => number): () => number {
  return () => {
    const u = Math.max(rand(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
  };
}

export interface SyntheticOptions {
  layout: KvLayout;
  tokens: number;
  seed?: number;
  /** Latent factors per token (rank of the signal). Default 12. */
  rank?: number;
  /** Std of the isotropic noise relative to the signal. Default 0.05. */
  noise?: number;
  /** First absolute position. Default 0. */
  positionStart?: number;
  positions?: Int32Array;
}

/** Rotates keys in place with RoPE (the inverse of what kvtc undoes). */
export function applyRope(x: Float32Array, layout: KvLayout, positions: Int32Array): void {
  const rope = layout.rope;
  if (!rope) return;
  const dims = rope.dims ?? layout.headDim;
  const freqs = ropeFreqs(rope, layout.headDim);
  const half = dims / 2;
  const row = layout.kvHeads * layout.headDim;
  for (let t = 0; t < positions.length; t++) {
    for (let i = 0; i < half; i++) {
      const a = positions[t]! * freqs[i]!;
      const c = Math.cos(a);
      const s = Math.sin(a);
      for (let h = 0; h < layout.kvHeads; h++) {
        const base = t * row + h * layout.headDim;
        const ia = base + (rope.style === 'interleaved' ? 2 * i : i);
        const ib = base + (rope.style === 'interleaved' ? 2 * i + 1 : i + half);
        const x0 = x[ia]!;
        const x1 = x[ib]!;
        x[ia] = x0 * c - x1 * s;
        x[ib] = x0 * s + x1 * c;
      }
    }
  }
}

/** A synthetic cache in f32; use withDtype() for f16/bf16. */
export function syntheticCache(opts: SyntheticOptions): KvCache {
  const { layout, tokens } = opts;
  const rank = opts.rank ?? 12;
  const noise = opts.noise ?? 0.05;
  const rand = mulberry32(opts.seed ?? 1);
  const g = gaussian(rand);
  const rv = layout.kvHeads * layout.headDim;
  // Loadings are fixed per model (seeded by the layout, not the sample) so calibration transfers.
  const lg = gaussian(mulberry32(12345 + layout.layers * 31 + rv));
  const loadK = Array.from({ length: layout.layers }, () => Float32Array.from({ length: rank * rv }, () => lg()));
  const loadV = Array.from({ length: layout.layers }, () => Float32Array.from({ length: rank * rv }, () => lg()));
  const offK = Array.from({ length: layout.layers }, () => Float32Array.from({ length: rv }, () => 0.5 * lg()));
  const positions =
    opts.positions ?? Int32Array.from({ length: tokens }, (_, i) => (opts.positionStart ?? 0) + i);
  const keys: Float32Array[] = [];
  const values: Float32Array[] = [];
  const z = new Float32Array(rank);
  const latent = Array.from({ length: tokens }, () => {
    for (let r = 0; r < rank; r++) z[r] = g() / Math.sqrt(1 + r); // decaying spectrum
    return Float32Array.from(z);
  });
  for (let l = 0; l < layout.layers; l++) {
    const k = new Float32Array(tokens * rv);
    const v = new Float32Array(tokens * rv);
    for (let t = 0; t < tokens; t++) {
      const zt = latent[t]!;
      for (let j = 0; j < rv; j++) {
        let sk = offK[l]![j]!;
        let sv = 0;
        for (let r = 0; r < rank; r++) {
          sk += zt[r]! * loadK[l]![r * rv + j]!;
          sv += zt[r]! * loadV[l]![r * rv + j]! * 0.3;
        }
        k[t * rv + j] = sk + noise * g();
        v[t * rv + j] = sv + 0.3 * noise * g();
      }
    }
    applyRope(k, layout, positions);
    keys.push(k);
    values.push(v);
  }
  return { layout: { ...layout, dtype: 'f32' }, tokens, positions, keys, values };
}

/** The same cache in another dtype (rounded). */
export function withDtype(cache: KvCache, dtype: DType): KvCache {
  if (dtype === 'f32') return cache;
  return {
    ...cache,
    layout: { ...cache.layout, dtype },
    keys: cache.keys.map((k) => fromFloat32(k as Float32Array, dtype)),
    values: cache.values.map((v) => fromFloat32(v as Float32Array, dtype)),
  };
}
