/**
 * The codec's leaf kernels through `native.internals.kernels`, every SIMD path this CPU has held
 * bit for bit to the scalar code:
 *  - rANS: the branch-free coders (the CPU decoder and the host/device span coder) against the original byte-at-a-time coder kept as a
 *    reference (native/rans_reference.h): the same stream bytes, the same decoded bytes and the
 *    same status on truncated, flipped, padded and random (corrupt) streams;
 *  - quantize / dequantize / group squared error on groups of every size class and width, with
 *    constant groups, zero scale, signed zeros, denormals, huge values, NaN and infinities;
 *  - dtype conversion: all 65536 f16 and bf16 patterns on load, random bit patterns and the
 *    rounding edges on store.
 */
import { describe, expect, it } from 'vitest';
import { DTYPE, kernels, normalizeFreqs, rowBytes, rowK, type SimdPath } from '../helpers/kernels.js';
import { gaussian, mulberry32 } from '../helpers/synthetic.js';

const { paths } = kernels.simd();
const vectorPaths = paths.filter((p) => p !== 'scalar');
const allPaths: SimdPath[] = ['scalar', 'avx2', 'avx512'];

function bitsOf(f: Float32Array): Uint32Array {
  return new Uint32Array(f.buffer, f.byteOffset, f.length);
}

// ---- rANS ------------------------------------------------------------------------------------

/** Frequency tables of several shapes for `contexts` contexts. */
function tables(contexts: number, seed: number): Uint16Array {
  const r = mulberry32(seed);
  const out = new Uint16Array(256 * contexts);
  for (let c = 0; c < contexts; c++) {
    const kind = c % 4;
    const w = new Float64Array(256);
    for (let s = 0; s < 256; s++) {
      if (kind === 0) w[s] = 1; // uniform
      else if (kind === 1) w[s] = Math.exp(-s / (1 + 20 * r())); // geometric, as shift/scale bytes
      else if (kind === 2) w[s] = s === (c * 37) % 256 ? 1e9 : 0; // one symbol takes 3841/4096
      else w[s] = r() ** 4;
    }
    out.set(normalizeFreqs(w), 256 * c);
  }
  return out;
}

/** Bytes drawn from the tables' own distributions (or uniformly, when `uniform`). */
function sample(freqs: Uint16Array, context: Uint16Array, n: number, seed: number, uniform = false): Uint8Array {
  const r = mulberry32(seed);
  const d = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    if (uniform) {
      d[i] = Math.floor(r() * 256);
      continue;
    }
    const base = 256 * context[i % context.length]!;
    let u = Math.floor(r() * 4096);
    let s = 0;
    while (u >= freqs[base + s]!) u -= freqs[base + s++]!;
    d[i] = s;
  }
  return d;
}

/** Encodes with all three coders, which must give the same stream; returns it. */
function encodeChecked(freqs: Uint16Array, context: Uint16Array, data: Uint8Array, what = ''): Uint8Array {
  const fast = kernels.ransEncode(freqs, context, data, 'fast').bytes;
  expect(Buffer.compare(fast, kernels.ransEncode(freqs, context, data, 'reference').bytes), `fast ${what}`).toBe(0);
  expect(Buffer.compare(kernels.ransEncode(freqs, context, data, 'span').bytes, fast), `span ${what}`).toBe(0);
  return fast;
}

/** Decodes with the reference coder and with both fast ones, which must agree with each other. */
function decodeBoth(freqs: Uint16Array, context: Uint16Array, coded: Uint8Array, n: number) {
  const a = new Uint8Array(n).fill(0xa5);
  const b = new Uint8Array(n).fill(0xa5);
  const c = new Uint8Array(n).fill(0xa5);
  const fast = kernels.ransDecode(freqs, context, coded, a, 'fast').status;
  const ref = kernels.ransDecode(freqs, context, coded, b, 'reference').status;
  const span = kernels.ransDecode(freqs, context, coded, c, 'span').status;
  expect(span).toBe(fast);
  expect(Buffer.compare(c, a)).toBe(0);
  return { fast, ref, a, b };
}

describe('rANS span coders', () => {
  const contexts = 12;
  const freqs = tables(contexts, 1);
  const r = mulberry32(7);
  const context = Uint16Array.from({ length: 61 }, () => Math.floor(r() * contexts));

  it('encode to the reference coder\'s bytes and decode them back, for every length class', () => {
    for (const n of [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 100, 1001, 4096, 4099, 65537]) {
      for (const uniform of [false, true]) {
        const data = sample(freqs, context, n, 100 + n, uniform);
        const fast = encodeChecked(freqs, context, data, `n=${n} uniform=${uniform}`);
        const { fast: sf, ref: sr, a, b } = decodeBoth(freqs, context, fast, n);
        expect([sf, sr]).toEqual([0, 0]);
        expect(Buffer.compare(a, data)).toBe(0);
        expect(Buffer.compare(b, data)).toBe(0);
      }
    }
  });

  it('agree for context periods shorter than, equal to and longer than the four lanes', () => {
    for (const period of [1, 2, 3, 4, 5, 7, 128, 4096]) {
      const ctx = Uint16Array.from({ length: period }, (_, j) => (j * 5) % contexts);
      for (const n of [period * 3 + 1, 9999]) {
        const data = sample(freqs, ctx, n, period + n);
        const fast = encodeChecked(freqs, ctx, data, `period ${period}`);
        const { fast: sf, ref: sr, a } = decodeBoth(freqs, ctx, fast, n);
        expect([sf, sr]).toEqual([0, 0]);
        expect(Buffer.compare(a, data), `period ${period}`).toBe(0);
      }
    }
  });

  it('give the same bytes with a one-context period and with skewed tables only', () => {
    const skew = tables(3, 9).subarray(256 * 2, 256 * 3); // one symbol at 3841/4096
    const ctx = new Uint16Array([0]);
    for (const uniform of [false, true]) {
      const data = sample(skew, ctx, 30001, 5, uniform);
      const fast = encodeChecked(skew, ctx, data);
      const { fast: sf, a } = decodeBoth(skew, ctx, fast, data.length);
      expect(sf).toBe(0);
      expect(Buffer.compare(a, data)).toBe(0);
    }
  });

  it('report the reference decoder\'s status and bytes on corrupt streams', () => {
    const n = 5003;
    const data = sample(freqs, context, n, 42);
    const good = encodeChecked(freqs, context, data);
    const rr = mulberry32(99);
    const seen = new Set<number>();
    const cases: [string, Uint8Array, number][] = [];
    for (const cut of [0, 3, 15, 16, 17, good.length >> 1, good.length - 9, good.length - 1])
      cases.push([`truncated to ${cut}`, good.subarray(0, cut), n]);
    cases.push(['one byte too many', Uint8Array.from([...good, 0]), n]);
    cases.push(['eight bytes too many', Uint8Array.from([...good, 1, 2, 3, 4, 5, 6, 7, 8]), n]);
    cases.push(['asks for fewer bytes', good, n - 3]);
    cases.push(['asks for more bytes', good, n + 5]);
    for (let k = 0; k < 200; k++) {
      const b = good.slice();
      const flips = 1 + Math.floor(rr() * 3);
      for (let f = 0; f < flips; f++) {
        const at = Math.floor(rr() * b.length);
        b[at] = b[at]! ^ (1 << Math.floor(rr() * 8));
      }
      cases.push([`flipped #${k}`, b, n]);
    }
    for (let k = 0; k < 100; k++) {
      const len = Math.floor(rr() * 300);
      const b = Uint8Array.from({ length: len }, () => Math.floor(rr() * 256));
      if (k % 4 === 0) b.fill(0, 0, Math.min(16, len)); // states far below the normalized interval
      if (k % 4 === 1) b.fill(0xff, 0, Math.min(16, len)); // states at the top of 32 bits
      cases.push([`random #${k}`, b, Math.floor(rr() * 600)]);
    }
    for (const [name, coded, m] of cases) {
      const { fast, ref, a, b } = decodeBoth(freqs, context, coded, m);
      expect(fast, name).toBe(ref);
      expect(Buffer.compare(a, b), name).toBe(0);
      seen.add(ref);
    }
    for (const status of [1, 2, 3, 4]) expect(seen).toContain(status); // short, ends early, trailing, bad final
  });
});

// ---- quantization ------------------------------------------------------------------------------

const SIZES = [1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 256, 1000, 1024, 1025, 2100];

/** n rows of k coefficients of one flavour, with edge values mixed in. */
function coefficients(kind: string, n: number, ld: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  const g = gaussian(r);
  const d = new Float32Array(n * ld);
  for (let i = 0; i < d.length; i++) {
    switch (kind) {
      case 'gaussian': d[i] = g() * (1 + 10 * r()); break;
      case 'constant': d[i] = 0.375; break;
      case 'signed-zeros': d[i] = r() < 0.5 ? (r() < 0.5 ? -0 : 0) : g(); break;
      case 'all-zero': d[i] = r() < 0.5 ? -0 : 0; break;
      case 'denormal': d[i] = g() * 1e-40; break;
      case 'tiny': d[i] = g() * 1e-7; break;
      case 'huge': d[i] = g() * (r() < 0.5 ? 7e4 : 3e38); break;
      case 'non-finite': d[i] = r() < 0.02 ? [NaN, Infinity, -Infinity][Math.floor(r() * 3)]! : g(); break;
      case 'ties': d[i] = Math.floor(r() * 16) / 2 - 4; break; // x.5 steps: rounding ties
      default: throw new Error(kind);
    }
  }
  return d;
}
const KINDS = ['gaussian', 'constant', 'signed-zeros', 'all-zero', 'denormal', 'tiny', 'huge', 'non-finite', 'ties'];

describe.runIf(vectorPaths.length > 0)('quantize / dequantize on the SIMD paths', () => {
  it('every path this CPU has is named, and the scalar one always', () => {
    expect(paths).toContain('scalar');
    for (const p of paths) expect(allPaths).toContain(p);
    expect(paths).toContain(kernels.simd().best);
  });

  for (const bits of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`quantizes, dequantizes and measures error like the scalar code at ${bits} bits`, () => {
      let seed = bits * 1000;
      for (const kind of KINDS) {
        // One plan with every size, groups back to back, and rows with padding (ld > k).
        const trip: number[] = [];
        let start = 0;
        for (const s of SIZES) {
          trip.push(start, s, bits);
          start += s;
        }
        const groups = Uint32Array.from(trip);
        const k = rowK(groups), rb = rowBytes(groups), n = 3, ld = k + 5;
        const D = coefficients(kind, n, ld, seed++);
        const want = new Uint8Array(n * rb);
        kernels.quantize(groups, D, n, ld, want, 'scalar');
        const back = new Float32Array(n * ld).fill(7);
        kernels.dequantize(groups, want, n, back, ld, 'scalar');
        for (const p of vectorPaths) {
          const got = new Uint8Array(n * rb).fill(0xee);
          kernels.quantize(groups, D, n, ld, got, p);
          expect(Buffer.compare(got, want), `${p} ${kind}`).toBe(0);
          const b2 = new Float32Array(n * ld).fill(7);
          kernels.dequantize(groups, want, n, b2, ld, p);
          expect(Buffer.compare(Buffer.from(bitsOf(b2).buffer), Buffer.from(bitsOf(back).buffer)), `${p} ${kind}`).toBe(0);
          for (let t = 0; t < n; t++)
            for (let i = 0; i < groups.length; i += 3) {
              const seg = D.subarray(t * ld + groups[i]!, t * ld + groups[i]! + groups[i + 1]!);
              expect(Object.is(kernels.groupSqError(seg, seg.length, bits, p), kernels.groupSqError(seg, seg.length, bits, 'scalar')), `${p} ${kind} size ${seg.length}`).toBe(true);
            }
        }
      }
    });
  }

  it('dequantizes arbitrary row bytes (any shift/scale, NaN and infinities included) like the scalar code', () => {
    const r = mulberry32(3);
    for (const bits of [1, 2, 4, 8, 3]) {
      const groups = Uint32Array.from(SIZES.flatMap((s, i) => [SIZES.slice(0, i).reduce((a, b) => a + b, 0), s, bits]));
      const rb = rowBytes(groups), k = rowK(groups), n = 4;
      const rows = Uint8Array.from({ length: n * rb }, () => Math.floor(r() * 256));
      const want = new Float32Array(n * k);
      kernels.dequantize(groups, rows, n, want, k, 'scalar');
      for (const p of vectorPaths) {
        const got = new Float32Array(n * k);
        kernels.dequantize(groups, rows, n, got, k, p);
        expect(Buffer.compare(Buffer.from(bitsOf(got).buffer), Buffer.from(bitsOf(want).buffer)), `${p} bits ${bits}`).toBe(0);
      }
    }
  });

  it('round-trips within half a quantization step (the scalar contract the paths share)', () => {
    const groups = Uint32Array.from([0, 64, 4, 64, 16, 8, 80, 256, 2]);
    const k = rowK(groups), rb = rowBytes(groups), n = 50;
    const D = coefficients('gaussian', n, k, 11);
    const rows = new Uint8Array(n * rb);
    const back = new Float32Array(n * k);
    kernels.quantize(groups, D, n, k, rows, kernels.simd().best);
    kernels.dequantize(groups, rows, n, back, k, kernels.simd().best);
    for (let t = 0; t < n; t++)
      for (let g = 0; g < groups.length; g += 3) {
        const seg = D.subarray(t * k + groups[g]!, t * k + groups[g]! + groups[g + 1]!);
        const range = Math.max(...seg) - Math.min(...seg);
        const step = range / (2 ** groups[g + 2]! - 1);
        for (let i = 0; i < seg.length; i++)
          expect(Math.abs(back[t * k + groups[g]! + i]! - seg[i]!)).toBeLessThanOrEqual(0.5 * step * 1.01 + Math.abs(seg[i]!) * 2e-3 + 1e-3 * range);
      }
  });
});

// ---- dtype conversion --------------------------------------------------------------------------

describe.runIf(vectorPaths.length > 0)('dtype conversion on the SIMD paths', () => {
  const every = Uint16Array.from({ length: 65536 }, (_, i) => i);

  for (const [name, dtype] of [['f16', DTYPE.f16], ['bf16', DTYPE.bf16]] as const) {
    it(`loads all 65536 ${name} patterns like the scalar code, at every alignment and tail length`, () => {
      const want = new Float32Array(65536);
      kernels.loadRow(every, dtype, want, 'scalar');
      for (const p of vectorPaths) {
        const got = new Float32Array(65536);
        kernels.loadRow(every, dtype, got, p);
        expect(Buffer.compare(Buffer.from(bitsOf(got).buffer), Buffer.from(bitsOf(want).buffer)), p).toBe(0);
        for (const [off, len] of [[1, 37], [3, 15], [0, 1], [7, 1023], [31744, 1100]] as const) {
          const g2 = new Float32Array(len);
          kernels.loadRow(every.subarray(off, off + len), dtype, g2, p);
          expect(Array.from(bitsOf(g2)), `${p} ${off}+${len}`).toEqual(Array.from(bitsOf(want.subarray(off, off + len))));
        }
      }
    });

    it(`stores random bit patterns and rounding edges as ${name} like the scalar code`, () => {
      const r = mulberry32(dtype);
      const n = 200003;
      const src = new Float32Array(n);
      const sb = bitsOf(src);
      for (let i = 0; i < n; i++) sb[i] = Math.floor(r() * 2 ** 32) >>> 0;
      // Edges: ties at both precisions, overflow thresholds, subnormal boundaries, NaN payloads.
      const edges: number[] = [];
      for (let e = 0; e < 256; e++)
        for (const m of [0, 1, 0x1000, 0x0fff, 0x1fff, 0x2000, 0x3000, 0x7fff, 0x8000, 0x8001, 0x18000, 0x7fffff, 0x400000, 0x400001])
          for (const s of [0, 0x80000000]) edges.push((s | (e << 23) | m) >>> 0);
      sb.set(edges.slice(0, n));
      const want = new Uint16Array(n);
      kernels.storeRow(src, dtype, want, 'scalar');
      for (const p of vectorPaths) {
        const got = new Uint16Array(n);
        kernels.storeRow(src, dtype, got, p);
        expect(Buffer.compare(Buffer.from(got.buffer), Buffer.from(want.buffer)), p).toBe(0);
        const part = new Uint16Array(21);
        kernels.storeRow(src.subarray(5, 26), dtype, part, p);
        expect(Array.from(part)).toEqual(Array.from(want.subarray(5, 26)));
      }
    });
  }

  it('f32 rows are copied unchanged on every path', () => {
    const src = Float32Array.from({ length: 1001 }, (_, i) => i * 0.37 - 50);
    for (const p of paths) {
      const a = new Float32Array(1001);
      kernels.loadRow(src, DTYPE.f32, a, p);
      expect(Array.from(a)).toEqual(Array.from(src));
      const b = new Float32Array(1001);
      kernels.storeRow(src, DTYPE.f32, b, p);
      expect(Array.from(b)).toEqual(Array.from(src));
    }
  });
});

describe('kernel hooks', () => {
  it('refuse a path the CPU does not have and an unknown one', () => {
    for (const p of allPaths.filter((x) => !paths.includes(x)))
      expect(() => kernels.loadRow(new Uint16Array(4), DTYPE.f16, new Float32Array(4), p)).toThrow(/cannot run/);
    expect(() => kernels.loadRow(new Uint16Array(4), DTYPE.f16, new Float32Array(4), 'neon' as SimdPath)).toThrow(/unknown SIMD path/);
  });
});
