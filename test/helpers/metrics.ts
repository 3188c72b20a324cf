/** Error measures shared by tests and benchmarks. */
import type { KvCache } from '../../src/layout.js';
import { toFloat32 } from '../../src/half.js';

/** Σ(x−x̂)² / Σx² over one stream (keys or values) of every layer, in float64. */
export function relMse(ref: KvCache, approx: KvCache, stream: 'keys' | 'values', tokens?: (t: number) => boolean): number {
  const rv = ref.layout.kvHeads * ref.layout.headDim;
  let num = 0;
  let den = 0;
  for (let l = 0; l < ref.layout.layers; l++) {
    const a = toFloat32(ref[stream][l]!, ref.layout.dtype);
    const b = toFloat32(approx[stream][l]!, approx.layout.dtype);
    for (let t = 0; t < ref.tokens; t++) {
      if (tokens && !tokens(t)) continue;
      for (let j = t * rv; j < (t + 1) * rv; j++) {
        const d = a[j]! - b[j]!;
        num += d * d;
        den += a[j]! * a[j]!;
      }
    }
  }
  return den === 0 ? (num === 0 ? 0 : Infinity) : num / den;
}

/** True when token t's rows are bit-identical in both caches (every layer, keys and values). */
export function tokenBitsEqual(a: KvCache, b: KvCache, t: number): boolean {
  const rv = a.layout.kvHeads * a.layout.headDim;
  for (const s of ['keys', 'values'] as const) {
    for (let l = 0; l < a.layout.layers; l++) {
      const x = new Uint8Array(a[s][l]!.buffer, a[s][l]!.byteOffset, a[s][l]!.byteLength);
      const y = new Uint8Array(b[s][l]!.buffer, b[s][l]!.byteOffset, b[s][l]!.byteLength);
      const bpe = a.layout.dtype === 'f32' ? 4 : 2;
      for (let i = t * rv * bpe; i < (t + 1) * rv * bpe; i++) if (x[i] !== y[i]) return false;
    }
  }
  return true;
}
