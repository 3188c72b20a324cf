/**
 * Typed access to `native.internals.kernels`, the leaf kernels of the codec (rANS span coders,
 * quantize/dequantize, dtype conversion) with the SIMD path chosen per call. Shared by
 * test/native/kernels.test.ts and bench/kernels.bench.ts.
 */
import { native } from '../../src/binding.js';
import type { NativeProfileHandle } from '../../src/binding.js';

export type SimdPath = 'scalar' | 'avx2' | 'avx512';
/** fast: the CPU codec's coder; span: the host/device span coder the GPU kernels run (for encoding the CPU runs it too); reference: the original. */
export type RansImpl = 'fast' | 'span' | 'reference';
/** dtype codes as the addon takes them. */
export const DTYPE = { f32: 0, f16: 1, bf16: 2 } as const;

export interface Kernels {
  simd(): { best: SimdPath; paths: SimdPath[] };
  ransEncode(freqs: Uint16Array, context: Uint16Array, data: Uint8Array, impl: RansImpl, reps?: number): { bytes: Uint8Array; seconds: number };
  ransDecode(freqs: Uint16Array, context: Uint16Array, coded: Uint8Array, out: Uint8Array, impl: RansImpl, reps?: number): { status: number; seconds: number };
  quantize(groups: Uint32Array, D: Float32Array, n: number, ld: number, rows: Uint8Array, path: SimdPath, reps?: number): number;
  dequantize(groups: Uint32Array, rows: Uint8Array, n: number, D: Float32Array, ld: number, path: SimdPath, reps?: number): number;
  groupSqError(d: Float32Array, size: number, bits: number, path: SimdPath): number;
  loadRow(src: ArrayBufferView, dtype: number, out: Float32Array, path: SimdPath, reps?: number): number;
  storeRow(src: Float32Array, dtype: number, out: ArrayBufferView, path: SimdPath, reps?: number): number;
  memcpy(src: ArrayBufferView, dst: ArrayBufferView, reps?: number): number;
  /**
   * X = mean + rows x basis by the int8 (VNNI) reconstruction; basis is k x p, k the plan's end.
   * statics make plan groups static: codes only in the row, each decoding to shift + code x scale
   * or, with levels, to levels[(i << bits) + code] for the group's component i.
   */
  int8Decode(
    groups: Uint32Array,
    basis: Float32Array,
    p: number,
    rows: Uint8Array,
    n: number,
    mean: Float32Array,
    X: Float32Array,
    reps?: number,
    statics?: { group: number; shift: number; scale: number; levels?: Float32Array }[],
  ): number;
  /** The register-only vpdpbusd loop: int8 operations and thread CPU seconds. */
  int8Peak(iterations: number): { ops: number; seconds: number };
  profileTables(profile: NativeProfileHandle, stream: number, group: number): { freqs: Uint16Array; context: Uint16Array; groups: Uint32Array };
}

export const kernels = (native.internals as unknown as { kernels: Kernels }).kernels;

/** Bytes of a quantized row for [start, size, bits] triples (quant.h's layout). */
export function rowBytes(groups: Uint32Array): number {
  let b = 0;
  for (let i = 0; i < groups.length; i += 3) b += 4 + Math.ceil((groups[i + 1]! * groups[i + 2]!) / 8);
  return b;
}

/** Coefficients a row of the plan needs: the end of its last group. */
export function rowK(groups: Uint32Array): number {
  let k = 0;
  for (let i = 0; i < groups.length; i += 3) k = Math.max(k, groups[i]! + groups[i + 1]!);
  return k;
}

/** Normalized rANS frequencies (sum 4096, each >= 1) from weights, largest remainder. */
export function normalizeFreqs(weights: ArrayLike<number>): Uint16Array {
  const total = Array.from(weights).reduce((s, w) => s + w, 0);
  const f = new Uint16Array(256);
  const rem: [number, number][] = [];
  let sum = 0;
  for (let s = 0; s < 256; s++) {
    const x = total > 0 ? (weights[s]! / total) * (4096 - 256) : (4096 - 256) / 256;
    f[s] = 1 + Math.floor(x);
    rem.push([x - Math.floor(x), s]);
    sum += f[s]!;
  }
  rem.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (let i = 0; sum < 4096; i = (i + 1) % 256, sum++) f[rem[i]![1]]!++;
  return f;
}
