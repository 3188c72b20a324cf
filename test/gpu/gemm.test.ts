/**
 * The projection GEMM kernels alone, every mode against a float64 product: the tensor-core modes
 * on partial tiles, both layouts of B and k not a multiple of the k step. 'tf32x3' must reach
 * FP32 accuracy and plain 'tf32' must not (so the split is what buys it). Runs on the real GPU
 * when one is usable, else on the CPU emulation, whose WMMA stand-in also enforces the
 * hardware's alignment rules (see target.ts, cuda/emu/mma.h).
 */
import { REAL_DEVICE } from './target.js';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { type GpuGemmMode, callNative, native } from '../../src/binding.js';
import { KvtcError } from '../../src/index.js';
import { gaussian, mulberry32 } from '../helpers/synthetic.js';

const gpu = native.gpu!;

function randomMatrix(count: number, seed: number): Float32Array {
  const g = gaussian(mulberry32(seed));
  // Mixed magnitudes, as PCA coefficients have: rounding error is relative to each term.
  return Float32Array.from({ length: count }, (_, i) => g() * (1 + (i % 7) * 3));
}

/**
 * The largest error of c against the float64 product, each element's error divided by
 * sum_k |a_ik * opB_kj| (the scale of rounding error any summation order can reach).
 */
function worstError(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number, transB: boolean): number {
  let worst = 0;
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let exact = 0;
      let scale = 0;
      for (let q = 0; q < k; q++) {
        const p = a[i * k + q]! * (transB ? b[j * k + q]! : b[q * n + j]!);
        exact += p;
        scale += Math.abs(p);
      }
      worst = Math.max(worst, Math.abs(c[i * n + j]! - exact) / scale);
    }
  return worst;
}

const SHAPES = [
  { m: 1, n: 1, k: 1 },
  { m: 70, n: 33, k: 45 },
  { m: 130, n: 96, k: 64 },
  { m: 17, n: 130, k: 100 },
];

describe('GPU projection GEMM', () => {
  for (const transB of [true, false]) {
    it(`tf32x3 and fp32 match a float64 product to FP32 rounding, tf32 to TF32 rounding (transB ${transB})`, async () => {
      const worst: Record<string, number> = {};
      for (const [s, { m, n, k }] of SHAPES.entries()) {
        const a = randomMatrix(m * k, 10 + s);
        const b = randomMatrix(k * n, 20 + s);
        for (const mode of ['tf32x3', 'tf32', 'fp32'] as const) {
          const { c, seconds } = await gpu.gemm(mode, a, b, { m, n, k, transB });
          expect(c.length).toBe(m * n);
          expect(seconds).toBeGreaterThan(0);
          worst[mode] = Math.max(worst[mode] ?? 0, worstError(a, b, c, m, n, k, transB));
        }
      }
      // Emulated: ~5e-7. The bound leaves room for a device's tensor cores, which may round
      // their FP32 accumulation differently.
      expect(worst.fp32).toBeLessThan(1e-5);
      expect(worst.tf32x3).toBeLessThan(1e-5);
      expect(worst.tf32).toBeLessThan(2e-3);
      // TF32 keeps 10 mantissa bits: one product cannot be FP32-accurate on random data.
      expect(worst.tf32).toBeGreaterThan(2e-5);
    });
  }

  it('repeats a run and reports its mean time', async () => {
    const a = randomMatrix(64 * 32, 1);
    const b = randomMatrix(32 * 64, 2);
    const once = await gpu.gemm('tf32x3', a, b, { m: 64, n: 64, k: 32, transB: false });
    const thrice = await gpu.gemm('tf32x3', a, b, { m: 64, n: 64, k: 32, transB: false, repeats: 3 });
    expect(Array.from(thrice.c)).toEqual(Array.from(once.c));
  });

  it('rejects unknown modes, missing cuBLAS and bad operands as typed errors', async () => {
    const a = new Float32Array(6);
    const b = new Float32Array(6);
    const size = { m: 2, n: 2, k: 3, transB: false };
    const codeOf = (p: Promise<unknown>) => p.then(() => 'resolved', (e: KvtcError) => e.code);
    await expect(codeOf(callNative(() => gpu.gemm('fp64' as GpuGemmMode, a, b, size)))).resolves.toBe('E_OPTIONS');
    await expect(codeOf(callNative(() => gpu.gemm('tf32', a, new Float32Array(5), size)))).resolves.toBe('E_LAYOUT');
    await expect(codeOf(callNative(() => gpu.gemm('tf32', a, b, { ...size, k: 0 })))).resolves.toBe('E_LAYOUT');
    if (!REAL_DEVICE) {
      // The emulation never loads cuBLAS.
      await expect(codeOf(callNative(() => gpu.gemm('cublas-fp32', a, b, size)))).resolves.toBe('E_BACKEND');
    }
  });

  it('a KVTC_GEMM that names no mode fails the choice of the GPU backend as E_OPTIONS; a valid one is reported', () => {
    // Fresh processes: the mode is read once per process.
    const script = `
      import { buildInfo } from './dist/index.js';
      import { resolveBackend } from './dist/backend.js';
      let e = 'resolved';
      try { resolveBackend('auto'); } catch (err) { e = err.code + ': ' + err.message; }
      console.log(JSON.stringify({ gemm: buildInfo().cudaGemm, e }));
    `;
    const run = (gemm: string) =>
      JSON.parse(
        execFileSync(process.execPath, ['--input-type=module', '-e', script], {
          cwd: new URL('../../', import.meta.url),
          encoding: 'utf8',
          env: { ...process.env, KVTC_GEMM: gemm },
        }),
      ) as { gemm: string; e: string };
    const bad = run('fp16');
    expect(bad.gemm).toContain('KVTC_GEMM=fp16 is not a GEMM mode');
    expect(bad.e).toBe(`E_OPTIONS: ${bad.gemm}`);
    expect(run('fp32')).toEqual({ gemm: 'fp32', e: 'resolved' });
  });
});
