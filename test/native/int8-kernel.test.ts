/**
 * The int8 reconstruction kernel (native/gemm_int8.cc) against a float64 reference: rows from
 * the codec's own quantizer, dequantized exactly (kernels.dequantize), times the float basis,
 * plus the mean. The int8 basis rounds each entry to 1/254 of its column's largest magnitude
 * (1/254² for the residual term of wide groups), which bounds the error of every output. Plans
 * with odd group sizes (partial quads), every code width, p not a multiple of 16 and batches
 * that are not whole tiles. Skipped without AVX-512 VNNI.
 */
import { describe, expect, it } from 'vitest';
import { buildInfo } from '../../src/index.js';
import { kernels, rowBytes, rowK } from '../helpers/kernels.js';
import { gaussian, mulberry32 } from '../helpers/synthetic.js';

function f16(h: number): number {
  const e = (h >> 10) & 31, m = h & 1023, s = h & 0x8000 ? -1 : 1;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}

const vnni = buildInfo().simd.includes('avx512vnni') && buildInfo().simd.includes('avx512f');

describe.skipIf(!vnni)('int8 reconstruction kernel', () => {
  const cases: [string, number[], number, number][] = [
    // [name, [size, bits] pairs, p, rows]
    ['8B-shaped key plan', [16, 8, 16, 4, 16, 4, 16, 4, 64, 4, 64, 2, 16, 2, 16, 2], 1024, 70],
    ['odd sizes, every width', [5, 8, 3, 7, 9, 6, 7, 5, 11, 4, 6, 3, 13, 2, 10, 1], 37, 67],
    ['one component', [1, 3], 16, 5],
    ['wide only', [21, 8], 50, 9],
  ];
  for (const [name, pairs, p, n] of cases) {
    it(`${name}: p=${p}, ${n} rows, within the basis rounding of float64`, () => {
      const g: number[] = [];
      let start = 0;
      for (let i = 0; i < pairs.length; i += 2) {
        g.push(start, pairs[i]!, pairs[i + 1]!);
        start += pairs[i]!;
      }
      const plan = new Uint32Array(g);
      const k = rowK(plan), rb = rowBytes(plan);
      const rnd = gaussian(mulberry32(17 + p));
      const D = Float32Array.from({ length: n * k }, (_, i) => (rnd() * 3) / Math.sqrt(1 + (i % k)) + 0.5);
      const rows = new Uint8Array(n * rb);
      kernels.quantize(plan, D, n, k, rows, 'scalar');
      const Dq = new Float32Array(n * k);
      kernels.dequantize(plan, rows, n, Dq, k, 'scalar');
      const B = Float32Array.from({ length: k * p }, () => rnd() * 0.3);
      const mean = Float32Array.from({ length: p }, () => rnd());
      const X = new Float32Array(n * p).fill(Number.NaN);
      kernels.int8Decode(plan, B, p, rows, n, mean, X);
      // Per column: the largest |B| (the int8 scale is colMax/127) and whether a row is in a wide group.
      const colMax = new Float64Array(p);
      for (let c = 0; c < k; c++) for (let j = 0; j < p; j++) colMax[j] = Math.max(colMax[j]!, Math.abs(B[c * p + j]!));
      const wide = new Uint8Array(k);
      for (let i = 0; i < g.length; i += 3) if (g[i + 2]! >= 6) wide.fill(1, g[i]!, g[i]! + g[i + 1]!);
      // The basis rounding multiplies scale·code, not the shift (its term uses exact column sums):
      // |scale·code| = |v - shift|, shift the group's fp16 value at the head of its bytes.
      const shiftOf = new Float64Array(n * k);
      for (let t = 0; t < n; t++) {
        let o = t * rb;
        for (let i = 0; i < g.length; i += 3) {
          const sh = f16(rows[o]! | (rows[o + 1]! << 8));
          shiftOf.fill(sh, t * k + g[i]!, t * k + g[i]! + g[i + 1]!);
          o += 4 + Math.ceil((g[i + 1]! * g[i + 2]!) / 8);
        }
      }
      let worstRatio = 0;
      let diff = 0;
      for (let t = 0; t < n; t++) {
        for (let j = 0; j < p; j++) {
          let ref = mean[j]!;
          let bound = 0;
          for (let c = 0; c < k; c++) {
            const v = Dq[t * k + c]!;
            ref += v * B[c * p + j]!;
            // Rounding to the nearest of 254 steps over [-colMax, colMax]: half a step, /127 again for the residual.
            bound += Math.abs(v - shiftOf[t * k + c]!) * (colMax[j]! / 254) * (wide[c] ? 1 / 127 : 1);
          }
          const e = Math.abs(X[t * p + j]! - ref);
          // float32 sums of up to k terms on top of the basis rounding.
          const allowed = 1.001 * bound + 1e-5 * (Math.abs(ref) + 1);
          worstRatio = Math.max(worstRatio, e / allowed);
          diff += e;
        }
      }
      expect(worstRatio).toBeLessThanOrEqual(1);
      expect(diff).toBeGreaterThan(0); // the int8 basis really rounds
    });
  }
});
