/**
 * The int8 reconstruction kernel (native/gemm_int8.cc) against a float64 reference: rows from
 * the codec's own quantizer, dequantized exactly (kernels.dequantize), times the float basis,
 * plus the mean. The int8 basis rounds each entry to 1/254 of its column's largest magnitude
 * (1/254² for the residual term of wide groups), which bounds the error of every output. Plans
 * with odd group sizes (partial quads), every code width, p not a multiple of 16 and batches
 * that are not whole tiles; static groups, uniform and with reconstruction levels whose range
 * shrinks 200-fold across the group (each component's level table must round within its own
 * range, not the group's). Skipped without AVX-512 VNNI.
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
// Plan groups this wide get the residual basis term (kInt8ResidualBits, native/gemm_int8.h).
const RESIDUAL_BITS = 4;

/**
 * The int8 output X (n x p) against its float64 reference mean + Σ_c value(t, c)·B[c][j]: the
 * worst ratio of an output's error to its allowed error (bound(t, j, c) summed over c, plus the
 * float32 sums' slack), and the total error (> 0: the int8 basis really rounded).
 */
function againstReference(
  X: Float32Array,
  B: Float32Array,
  mean: Float32Array,
  n: number,
  p: number,
  k: number,
  value: (t: number, c: number) => number,
  bound: (t: number, j: number, c: number) => number,
): { worstRatio: number; diff: number } {
  let worstRatio = 0;
  let diff = 0;
  for (let t = 0; t < n; t++) {
    for (let j = 0; j < p; j++) {
      let ref = mean[j]!;
      let allowed = 0;
      for (let c = 0; c < k; c++) {
        ref += value(t, c) * B[c * p + j]!;
        allowed += bound(t, j, c);
      }
      const e = Math.abs(X[t * p + j]! - ref);
      // float32 sums of up to k terms on top of the rounding.
      worstRatio = Math.max(worstRatio, e / (1.001 * allowed + 1e-5 * (Math.abs(ref) + 1)));
      diff += e;
    }
  }
  return { worstRatio, diff };
}

/**
 * Per column the largest |B| (the int8 scale is colMax/127), and per row whether its plan group
 * ([start, size, bits] triples) has the residual term.
 */
function basisScales(B: Float32Array, k: number, p: number, g: number[]): { colMax: Float64Array; wide: Uint8Array } {
  const colMax = new Float64Array(p);
  for (let c = 0; c < k; c++) for (let j = 0; j < p; j++) colMax[j] = Math.max(colMax[j]!, Math.abs(B[c * p + j]!));
  const wide = new Uint8Array(k);
  for (let i = 0; i < g.length; i += 3) if (g[i + 2]! >= RESIDUAL_BITS) wide.fill(1, g[i]!, g[i]! + g[i + 1]!);
  return { colMax, wide };
}

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
      const { colMax, wide } = basisScales(B, k, p, g);
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
      const { worstRatio, diff } = againstReference(X, B, mean, n, p, k, (t, c) => Dq[t * k + c]!, (t, j, c) =>
        // Rounding to the nearest of 254 steps over [-colMax, colMax]: half a step, /127 again for the residual.
        Math.abs(Dq[t * k + c]! - shiftOf[t * k + c]!) * (colMax[j]! / 254) * (wide[c] ? 1 / 127 : 1),
      );
      expect(worstRatio).toBeLessThanOrEqual(1);
      expect(diff).toBeGreaterThan(0); // the int8 basis really rounds
    });
  }

  it('static groups, uniform and with levels of widely spread ranges: within the basis and level-table rounding', () => {
    // [size, bits, kind]: m = min/max (header in the row), u = static uniform, l = static with levels.
    const spec: [number, number, 'm' | 'u' | 'l'][] = [[16, 8, 'm'], [12, 5, 'u'], [24, 4, 'l'], [10, 2, 'l'], [7, 3, 'm'], [9, 6, 'u']];
    const p = 40, n = 67;
    const rnd = gaussian(mulberry32(91));
    const g: number[] = [];
    const statics: { group: number; shift: number; scale: number; levels?: Float32Array }[] = [];
    let k = 0;
    spec.forEach(([size, bits, kind], gi) => {
      g.push(k, size, bits);
      k += size;
      if (kind === 'u') statics.push({ group: gi, shift: -0.75, scale: 0.046875 });
      if (kind === 'l') {
        const L = 1 << bits;
        // Component i's levels span about 2^(-i/3) of the first's (24 components: ~200x).
        const levels = Float32Array.from({ length: size * L }, (_, j) => (2 ** (-Math.floor(j / L) / 3)) * (((j % L) - (L - 1) / 2) / L + 0.01 * rnd()));
        statics.push({ group: gi, shift: 0, scale: 1, levels });
      }
    });
    const plan = new Uint32Array(g);
    const B = Float32Array.from({ length: k * p }, () => rnd() * 0.3);
    // Columns 0-9 see only the 4-bit level group's 12 smallest components (ranges 1/16-1/200 of
    // its first): their outputs fail the bound if those components share the group's table scale.
    const small = g[6]! + 12;
    for (let c = 0; c < k; c++) if (c < small || c >= small + 12) for (let j = 0; j < 10; j++) B[c * p + j] = 0;
    const mean = Float32Array.from({ length: p }, () => rnd());
    // Rows: per group [fp16 shift][fp16 scale] (min/max only), then codes packed LSB-first.
    const rowLen = spec.reduce((a, [size, bits, kind]) => a + (kind === 'm' ? 4 : 0) + Math.ceil((size * bits) / 8), 0);
    const rows = new Uint8Array(n * rowLen);
    const V = new Float64Array(n * k); // each coefficient's exact value
    const U = new Float64Array(n * k); // the magnitude the basis rounding multiplies (bounded, see below)
    const lutErr = new Float64Array(k); // the level table's rounding bound per component
    for (let t = 0; t < n; t++) {
      let o = t * rowLen;
      let c0 = 0;
      spec.forEach(([size, bits, kind], gi) => {
        let shift = 0, scale = 0;
        if (kind === 'm') {
          const sh = 0xb800, sc = 0x2c00 | ((t * 37 + gi * 11) & 0x3ff); // -0.5 and ~0.06-0.12
          rows[o] = sh & 255; rows[o + 1] = sh >> 8; rows[o + 2] = sc & 255; rows[o + 3] = sc >> 8;
          shift = f16(sh); scale = f16(sc);
          o += 4;
        }
        const st = statics.find((x) => x.group === gi);
        let acc = 0, nacc = 0;
        for (let i = 0; i < size; i++) {
          const code = Math.floor(Math.abs(rnd() * 1e6)) % (1 << bits);
          acc |= code << nacc;
          nacc += bits;
          while (nacc >= 8) { rows[o++] = acc & 255; acc >>>= 8; nacc -= 8; }
          const c = c0 + i;
          if (st?.levels) {
            const L = 1 << bits;
            // The largest |level| of the component's quad: a run of quads shares one table scale s
            // only while every quad's range is at least half the run's, so s <= 2 * quadMax / 127;
            // the table rounds by s / 2 and the basis rounding multiplies |s * u| <= 255 s.
            let quadMax = 0;
            for (let j = Math.floor(i / 4) * 4; j < Math.min(size, Math.floor(i / 4) * 4 + 4); j++)
              for (let q = 0; q < L; q++) quadMax = Math.max(quadMax, Math.abs(st.levels[j * L + q]!));
            V[t * k + c] = st.levels[i * L + code]!;
            U[t * k + c] = (255 * 2 * quadMax) / 127;
            lutErr[c] = quadMax / 127;
          } else {
            const [sh, sc] = st ? [st.shift, st.scale] : [shift, scale];
            V[t * k + c] = Math.fround(sh + code * sc);
            U[t * k + c] = Math.abs(code * sc);
          }
        }
        if (nacc > 0) rows[o++] = acc & 255;
        c0 += size;
      });
    }
    const X = new Float32Array(n * p).fill(Number.NaN);
    kernels.int8Decode(plan, B, p, rows, n, mean, X, 1, statics);
    const { colMax, wide } = basisScales(B, k, p, g);
    const { worstRatio, diff } = againstReference(X, B, mean, n, p, k, (t, c) => V[t * k + c]!, (t, j, c) => {
      // (a zero basis entry is exact in int8: no rounding term)
      const b = B[c * p + j]!;
      return b === 0 ? 0 : U[t * k + c]! * (colMax[j]! / 254) * (wide[c] ? 1 / 127 : 1) + lutErr[c]! * Math.abs(b);
    });
    expect(worstRatio).toBeLessThanOrEqual(1);
    expect(diff).toBeGreaterThan(0);
  });
});
