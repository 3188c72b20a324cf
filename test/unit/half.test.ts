import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../helpers/synthetic.js';
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  fromFloat32,
  toFloat32,
} from '../../src/half.js';


const f64 = new Float64Array(1);
const u64 = new BigUint64Array(f64.buffer);
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function bitsToF32(u: number): number {
  u32[0] = u;
  return f32[0]!;
}

/**
 * Slow reference: rounds the double x to a binary format with `p` significand bits, minimum
 * normal exponent `emin` and maximum exponent `emax`, round to nearest even, using exact BigInt
 * arithmetic on the double's significand. Returns the rounded value as a number (±Infinity on
 * overflow), so it can also be checked against Math.fround with the float32 parameters.
 */
function refRound(x: number, p: number, emin: number, emax: number): number {
  if (Number.isNaN(x) || !Number.isFinite(x) || x === 0) return x;
  f64[0] = x;
  const bits = u64[0]!;
  const neg = bits >> 63n === 1n;
  const bexp = Number((bits >> 52n) & 0x7ffn);
  const frac = bits & ((1n << 52n) - 1n);
  // |x| = M · 2^e exactly.
  const M = bexp === 0 ? frac : frac | (1n << 52n);
  const e = bexp === 0 ? -1074 : bexp - 1075;
  const E = e + M.toString(2).length - 1; // floor(log2 |x|)
  const q = Math.max(E, emin) - (p - 1); // quantum exponent of the target format at |x|
  let k: bigint;
  if (e >= q) {
    k = M << BigInt(e - q);
  } else {
    const shift = BigInt(q - e);
    k = M >> shift;
    const rem = M & ((1n << shift) - 1n);
    const half = 1n << (shift - 1n);
    if (rem > half || (rem === half && (k & 1n) === 1n)) k += 1n;
  }
  // Overflow: the rounded value reaches 2^(emax+1).
  const bitsK = k === 0n ? 0 : k.toString(2).length;
  if (bitsK > 0 && bitsK - 1 + q >= emax + 1) return neg ? -Infinity : Infinity;
  const v = Number(k) * Math.pow(2, q); // exact: k has ≤ p+1 bits, 2^q is in double range
  return neg ? -v : v;
}

const refF32 = (x: number) => refRound(x, 24, -126, 127);
const refF16 = (x: number) => refRound(x, 11, -14, 15);
const refBf16 = (x: number) => refRound(x, 8, -126, 127);

/** Random doubles over many binades, both signs, plus random float32 bit patterns. */
function randomValues(seed: number, count: number): number[] {
  const rnd = mulberry32(seed);
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const kind = i % 4;
    const sign = rnd() < 0.5 ? -1 : 1;
    if (kind === 0) out.push(sign * rnd() * Math.pow(2, Math.floor(rnd() * 60) - 35)); // around f16 range
    else if (kind === 1) out.push(sign * (1 + rnd()) * Math.pow(2, Math.floor(rnd() * 280) - 150)); // whole f32 range
    else if (kind === 2) out.push(bitsToF32(Math.floor(rnd() * 4294967296))); // any f32 pattern (incl. NaN/Inf)
    else out.push(sign * rnd() * 70000); // near the f16 overflow boundary
  }
  return out;
}

/** Halfway points between consecutive representable values, and their nearest neighbours. */
function halfwayCases(decode: (b: number) => number, maxFiniteBits: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < maxFiniteBits; b += 1 + (b % 7)) {
    const lo = decode(b);
    const hi = decode(b + 1);
    const mid = (lo + hi) / 2; // exact in double
    const tiny = (hi - lo) * 2 ** -30;
    out.push(mid, mid + tiny, mid - tiny, -mid, -(mid + tiny), -(mid - tiny));
    // Neighbours of the halfway point in float32 itself (the bulk path's inputs).
    f32[0] = mid;
    const mb = u32[0]!;
    out.push(bitsToF32(mb + 1), bitsToF32(mb - 1));
  }
  return out;
}

function sameValue(a: number, b: number): boolean {
  return Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
}

describe('slow reference', () => {
  it('agrees with Math.fround (validates the reference itself)', () => {
    const vals = [...randomValues(1, 20000), 2 ** -149, 2 ** -150, 3 * 2 ** -151, 3.4028235677973366e38, 3.4028235677973366e38 * (1 + 2 ** -25), 1e39, -0];
    for (const x of vals) {
      if (!sameValue(refF32(x), Math.fround(x))) throw new Error(`reference disagrees with fround at ${x}`);
    }
  });
});

describe('f16', () => {
  it('f16 → f32 → f16 is the identity on all 65536 patterns (NaNs stay NaN)', () => {
    for (let h = 0; h < 65536; h++) {
      const v = f16BitsToF32(h);
      const back = f32ToF16Bits(v);
      const isNaN16 = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (isNaN16) {
        expect(Number.isNaN(v)).toBe(true);
        expect((back & 0x7c00) === 0x7c00 && (back & 0x3ff) !== 0).toBe(true);
        expect(back & 0x8000).toBe(h & 0x8000);
      } else if (back !== h) {
        throw new Error(`pattern 0x${h.toString(16)} → ${v} → 0x${back.toString(16)}`);
      }
    }
  });

  it('decodes known patterns', () => {
    expect(f16BitsToF32(0x3c00)).toBe(1);
    expect(f16BitsToF32(0xc000)).toBe(-2);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(f16BitsToF32(0x0400)).toBe(2 ** -14);
    expect(f16BitsToF32(0x7c00)).toBe(Infinity);
    expect(f16BitsToF32(0xfc00)).toBe(-Infinity);
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
  });

  it('edge values round as IEEE round-to-nearest-even says', () => {
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(65519.99)).toBe(0x7bff);
    expect(f32ToF16Bits(65520 - 2 ** -30)).toBe(0x7bff); // would be Inf with a float32 pre-rounding
    expect(f32ToF16Bits(65520)).toBe(0x7c00);
    expect(f32ToF16Bits(-65520)).toBe(0xfc00);
    expect(f32ToF16Bits(1e10)).toBe(0x7c00);
    expect(f32ToF16Bits(Infinity)).toBe(0x7c00);
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001);
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // tie → even (0)
    expect(f32ToF16Bits(-(2 ** -25))).toBe(0x8000);
    expect(f32ToF16Bits(2 ** -25 + 2 ** -70)).toBe(0x0001); // just above the tie, below f32 precision
    expect(f32ToF16Bits(2 ** -26)).toBe(0x0000);
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002); // 1.5 → tie → even 2
    expect(f32ToF16Bits(2 ** -14 - 2 ** -26)).toBe(0x0400); // rounds up into the normals
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f32ToF16Bits(NaN)).toBe(0x7e00);
  });

  it('matches the exact reference on random, halfway and edge values', () => {
    const vals = [
      ...randomValues(2, 40000),
      ...halfwayCases(f16BitsToF32, 0x7bff),
      65504, 65519, 65520, 65536, 2 ** -24, 2 ** -25, 2 ** -26, 1e-30, 0, -0, Infinity, -Infinity,
    ];
    for (const x of vals) {
      const got = f16BitsToF32(f32ToF16Bits(x));
      const want = refF16(x);
      if (!sameValue(got, want)) throw new Error(`f16(${x}) = ${got}, want ${want}`);
    }
  });
});

describe('bf16', () => {
  it('bf16 → f32 → bf16 is the identity on all 65536 patterns (NaNs stay NaN)', () => {
    for (let b = 0; b < 65536; b++) {
      const v = bf16BitsToF32(b);
      const back = f32ToBf16Bits(v);
      const isNaN16 = (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0;
      if (isNaN16) {
        expect(Number.isNaN(v)).toBe(true);
        expect((back & 0x7f80) === 0x7f80 && (back & 0x7f) !== 0).toBe(true);
      } else if (back !== b) {
        throw new Error(`pattern 0x${b.toString(16)} → ${v} → 0x${back.toString(16)}`);
      }
    }
  });

  it('edge values', () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie → even (up)
    expect(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -40)).toBe(0x3f81); // just above the tie, below f32 precision
    expect(f32ToBf16Bits(3.4028234663852886e38)).toBe(0x7f80); // f32 max rounds to Inf
    expect(bf16BitsToF32(0x7f7f)).toBe(3.3895313892515355e38);
    expect(f32ToBf16Bits(3.3895313892515355e38)).toBe(0x7f7f);
    expect(f32ToBf16Bits(1e300)).toBe(0x7f80);
    expect(f32ToBf16Bits(-Infinity)).toBe(0xff80);
    expect(f32ToBf16Bits(2 ** -133)).toBe(0x0001); // smallest bf16 subnormal
    expect(f32ToBf16Bits(2 ** -134)).toBe(0x0000); // tie → even
    expect(f32ToBf16Bits(1e-300)).toBe(0x0000);
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN)))).toBe(true);
  });

  it('matches the exact reference on random, halfway and edge values', () => {
    const vals = [...randomValues(3, 40000), ...halfwayCases(bf16BitsToF32, 0x7f7f), 2 ** -133, 2 ** -134, 0, -0];
    for (const x of vals) {
      const got = bf16BitsToF32(f32ToBf16Bits(x));
      const want = refBf16(x);
      if (!sameValue(got, want)) throw new Error(`bf16(${x}) = ${got}, want ${want}`);
    }
  });
});

describe('bulk helpers', () => {
  const all = new Uint16Array(65536).map((_, i) => i);

  it('toFloat32 / fromFloat32 agree with the scalar functions on every f16 pattern', () => {
    const f = toFloat32(all, 'f16');
    for (let h = 0; h < 65536; h++) {
      if (!sameValue(f[h]!, f16BitsToF32(h))) throw new Error(`toFloat32 f16 0x${h.toString(16)}`);
    }
    const back = fromFloat32(f, 'f16') as Uint16Array;
    expect(back).toBeInstanceOf(Uint16Array);
    for (let h = 0; h < 65536; h++) {
      const isNaN16 = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      // Bulk paths keep NaN payloads; signalling NaNs come back quieted.
      const want = isNaN16 ? h | 0x200 : h;
      if (back[h] !== want) throw new Error(`fromFloat32 f16 0x${h.toString(16)} → 0x${back[h]!.toString(16)}`);
    }
  });

  it('toFloat32 / fromFloat32 agree with the scalar functions on every bf16 pattern', () => {
    const f = toFloat32(all, 'bf16');
    const back = fromFloat32(f, 'bf16') as Uint16Array;
    for (let b = 0; b < 65536; b++) {
      if (!sameValue(f[b]!, bf16BitsToF32(b))) throw new Error(`toFloat32 bf16 0x${b.toString(16)}`);
      const isNaN16 = (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0;
      const want = isNaN16 ? b | 0x40 : b;
      if (back[b] !== want) throw new Error(`fromFloat32 bf16 0x${b.toString(16)}`);
    }
  });

  it('fromFloat32 rounds random float32 data like the scalar functions', () => {
    const rnd = mulberry32(4);
    const src = new Float32Array(50000);
    const bits = new Uint32Array(src.buffer);
    for (let i = 0; i < src.length; i++) bits[i] = Math.floor(rnd() * 4294967296);
    const h = fromFloat32(src, 'f16');
    const b = fromFloat32(src, 'bf16');
    for (let i = 0; i < src.length; i++) {
      const x = src[i]!;
      if (Number.isNaN(x)) {
        expect(Number.isNaN(f16BitsToF32(h[i]!))).toBe(true);
        expect(Number.isNaN(bf16BitsToF32(b[i]!))).toBe(true);
        continue;
      }
      if (h[i] !== f32ToF16Bits(x)) throw new Error(`f16 bulk/scalar mismatch at ${x}`);
      if (b[i] !== f32ToBf16Bits(x)) throw new Error(`bf16 bulk/scalar mismatch at ${x}`);
    }
  });

  it('copies f32, honours subarray offsets and out buffers, rejects wrong array types', () => {
    const backing = new Float32Array([9, 1.5, -2, 65520]);
    const view = backing.subarray(1);
    const copy = toFloat32(view, 'f32');
    expect(Array.from(copy)).toEqual([1.5, -2, 65520]);
    copy[0] = 7;
    expect(view[0]).toBe(1.5);
    const out = new Uint16Array(3);
    expect(fromFloat32(view, 'f16', out)).toBe(out);
    expect(Array.from(out)).toEqual([0x3e00, 0xc000, 0x7c00]);
    const u16 = new Uint16Array([0xffff, 0x3c00, 0x4000]).subarray(1);
    const dst = new Float32Array(2);
    expect(Array.from(toFloat32(u16, 'f16', dst))).toEqual([1, 2]);
    expect(() => toFloat32(new Float32Array(2), 'f16')).toThrow(/Uint16Array/);
    expect(() => toFloat32(new Uint16Array(2), 'f32')).toThrow(/Float32Array/);
    expect(() => toFloat32(new Uint16Array(2), 'f16', new Float32Array(3))).toThrow(/out/);
  });
});
