/**
 * The decoder's SIMD re-rotation of keys (native/rope_simd.cc) gives the scalar rotation's bits
 * on every path the CPU has: both styles, partial rotary dims with odd pair counts (the masked
 * and scalar tails), several heads, forward and inverse, positions up to 1e5.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../../src/binding.js';
import { mulberry32 } from '../helpers/synthetic.js';

const paths = native.internals.simdPaths();

describe('rope on each SIMD path', () => {
  const shapes: [string, number, number, number][] = [
    // [name, style (1 interleaved, 2 neox), headDim, rotated dims]
    ['neox 128', 2, 128, 128],
    ['interleaved 128', 1, 128, 128],
    ['neox partial, odd pairs', 2, 40, 26],
    ['interleaved partial, odd pairs', 1, 40, 22],
    ['neox tiny', 2, 6, 2],
    ['interleaved 18 pairs', 1, 36, 36],
  ];
  for (const [name, style, headDim, dims] of shapes) {
    it(`${name}: every path equals scalar bit for bit`, () => {
      const heads = 3, tokens = 9;
      const r = mulberry32(headDim * 7 + dims);
      const freqs = Float32Array.from({ length: dims / 2 }, (_, i) => 10000 ** (-(2 * i) / dims));
      const positions = Int32Array.from({ length: tokens }, (_, t) => (t * 12_347) % 100_003);
      const x = Float32Array.from({ length: tokens * heads * headDim }, () => (r() - 0.5) * 8);
      for (const inverse of [false, true]) {
        const want = x.slice();
        native.internals.rope(want, heads, headDim, style, freqs, positions, inverse);
        expect(Buffer.compare(Buffer.from(want.buffer), Buffer.from(x.buffer))).not.toBe(0);
        for (const p of paths) {
          const got = x.slice();
          native.internals.rope(got, heads, headDim, style, freqs, positions, inverse, p);
          expect(Buffer.compare(Buffer.from(got.buffer), Buffer.from(want.buffer)), `${p} inverse=${inverse}`).toBe(0);
        }
      }
    });
  }
});
