/**
 * The CPU GEMM kernels behind the codec's projections (native.internals.gemm): every SIMD path
 * this CPU can run, forced per call, against a float64 reference with a rigorous float32
 * rounding bound — partial row and column tiles, odd k, k = 0, strides wider than the rows,
 * unaligned operands, the bias epilogue, accumulation, B given transposed — and that nothing
 * outside C's m x n window is written. Also: KVTC_SIMD is read once per process and a bad value
 * is E_OPTIONS.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { native } from '../../src/binding.js';
import { gaussian, mulberry32 } from '../helpers/synthetic.js';

const { gemm, simdPaths, fmaPeak, gemmRepeat } = native.internals;
const paths = simdPaths();
const U = 2 ** -24; // unit roundoff of float32

interface Case {
  m: number;
  n: number;
  k: number;
  lda: number;
  ldb: number;
  ldc: number;
  off: number; // element offset of every operand into its buffer (1: not 16-byte aligned)
  transB: boolean;
  bias: boolean;
  accumulate: boolean;
}

/** A Float32Array view `off` elements into a bigger buffer (so the data pointer is unaligned). */
function buffer(len: number, off: number, fill: (i: number) => number): Float32Array {
  const a = new Float32Array(len + off + 3).fill(Number.NaN);
  const v = a.subarray(off, off + len);
  for (let i = 0; i < len; i++) v[i] = fill(i);
  return v;
}

function run(path: string, c: Case, seed: number) {
  const g = gaussian(mulberry32(seed));
  const { m, n, k, lda, ldb, ldc } = c;
  const a = buffer(Math.max(1, m * lda), c.off, () => g());
  const bRows = c.transB ? n : k;
  const b = buffer(Math.max(1, bRows * ldb), c.off, () => g());
  const sentinel = 12345.5;
  const c0 = buffer(Math.max(1, m * ldc), c.off, (i) => (i % ldc < n ? g() : sentinel));
  const bias = c.bias ? buffer(n, c.off, () => 10 * g()) : null;
  const out = c0.slice();
  gemm(path, m, n, k, a, lda, b, ldb, c.transB, out, ldc, bias, c.accumulate);
  let worst = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let exact = 0;
      let mag = 0;
      for (let p = 0; p < k; p++) {
        const bv = c.transB ? b[j * ldb + p]! : b[p * ldb + j]!;
        exact += a[i * lda + p]! * bv;
        mag += Math.abs(a[i * lda + p]! * bv);
      }
      if (bias) {
        exact += bias[j]!;
        mag += Math.abs(bias[j]!);
      }
      if (c.accumulate) {
        exact += c0[i * ldc + j]!;
        mag += Math.abs(c0[i * ldc + j]!);
      }
      // Sum of k products plus up to two additions: |error| <= (k + 2) u sum|terms| (+ slack for u^2).
      const bound = 1.01 * (k + 2) * U * mag + 1e-30;
      worst = Math.max(worst, Math.abs(out[i * ldc + j]! - exact) / bound);
    }
    for (let j = n; j < ldc && i * ldc + j < out.length; j++) expect(out[i * ldc + j]).toBe(sentinel);
  }
  return { worst, out };
}

const cases: Case[] = [];
const shapes: [number, number, number][] = [
  [1, 1, 1],
  [7, 5, 3],
  [8, 16, 16],
  [9, 17, 33],
  [13, 47, 31],
  [6, 48, 7],
  [15, 49, 1],
  [17, 97, 65],
  [64, 50, 257],
  [3, 20, 0],
];
for (const [si, [m, n, k]] of shapes.entries()) {
  const wide = si % 2 === 1;
  for (const transB of [false, true]) {
    cases.push({
      m,
      n,
      k,
      lda: k + (wide ? 3 : 0),
      ldb: (transB ? k : n) + (wide ? 5 : 0),
      ldc: n + (wide ? 2 : 0),
      off: si % 3 === 0 ? 0 : 1,
      transB,
      bias: si % 2 === 0,
      accumulate: si % 4 === 1,
    });
  }
}

describe('packed GEMM kernels', () => {
  it('this CPU runs at least the scalar path', () => {
    expect(paths).toContain('scalar');
    expect(paths.at(-1)).toBe('scalar');
  });

  for (const path of paths) {
    it(`${path}: matches a float64 reference within the float32 rounding bound on edge shapes`, () => {
      for (const [i, c] of cases.entries()) {
        const { worst } = run(path, c, 1000 + i);
        expect(worst, JSON.stringify(c)).toBeLessThanOrEqual(1);
      }
    });
  }

  it('the codec shapes (64 x 1024 x 224 encode, 64 x 224 x 1024 decode) stay within the bound on every path', () => {
    for (const path of paths) {
      for (const c of [
        { m: 64, n: 224, k: 1024, transB: true, bias: false },
        { m: 64, n: 1024, k: 224, transB: false, bias: true },
      ]) {
        const ld = { lda: c.k, ldb: c.transB ? c.k : c.n, ldc: c.n };
        expect(run(path, { ...c, ...ld, off: 0, accumulate: false }, 7).worst).toBeLessThanOrEqual(1);
      }
    }
  });

  it('avx2 and avx512 give bit-identical results (one FMA per term, in order)', () => {
    if (!paths.includes('avx512') || !paths.includes('avx2')) return;
    for (const [i, c] of cases.entries()) {
      expect(Array.from(run('avx512', c, 50 + i).out)).toEqual(Array.from(run('avx2', c, 50 + i).out));
    }
  });

  it('an unknown or unsupported path is E_OPTIONS', () => {
    const a = new Float32Array(4);
    expect(() => gemm('sse9', 2, 2, 2, a, 2, a, 2, false, new Float32Array(4), 2, null, false)).toThrow(
      expect.objectContaining({ code: 'E_OPTIONS' }),
    );
  });

  it('operands too short for the shape are refused, not read past', () => {
    const a = new Float32Array(3);
    expect(() => gemm('scalar', 2, 2, 2, a, 2, new Float32Array(4), 2, false, new Float32Array(4), 2, null, false)).toThrow(
      expect.objectContaining({ code: 'E_INTERNAL' }),
    );
  });

  it('fmaPeak and gemmRepeat report the FLOPs they ran', () => {
    for (const path of paths) {
      expect(fmaPeak(path, 1000)).toBeGreaterThan(0);
      expect(gemmRepeat(path, 3, 5, 7, 2)).toBe(2 * 3 * 5 * 7 * 2);
    }
  });
});

describe('KVTC_SIMD', () => {
  // Fresh processes: the variable is read once per process.
  const script = `
    const a = require('./build/Release/kvtc.node');
    let e = null;
    const f = new Float32Array(4);
    try { a.internals.gemm(null, 2, 2, 2, f, 2, f, 2, false, new Float32Array(4), 2, null, false); }
    catch (err) { e = err.code + ': ' + err.message; }
    console.log(JSON.stringify({ gemm: a.buildInfo().codecGemm, e }));
  `;
  const child = (value: string) =>
    JSON.parse(
      execFileSync(process.execPath, ['-e', script], {
        cwd: new URL('../../', import.meta.url),
        encoding: 'utf8',
        env: { ...process.env, KVTC_SIMD: value },
      }),
    ) as { gemm: string | null; e: string | null };

  it('forces each supported path; the default is the widest', () => {
    for (const path of paths) expect(child(path)).toEqual({ gemm: path, e: null });
    expect(child('')).toEqual({ gemm: paths[0], e: null });
  });

  it('a value that names no path is E_OPTIONS naming the variable (and buildInfo says why)', () => {
    const r = child('avx1024');
    expect(r.gemm).toBe("KVTC_SIMD must be avx512, avx2 or scalar, got 'avx1024'");
    expect(r.e).toBe(`E_OPTIONS: ${r.gemm}`);
  });
});
