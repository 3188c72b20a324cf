/**
 * Exact conversions between JS numbers / float32 and the two 16-bit float formats kvtc accepts:
 * IEEE 754 binary16 ("f16") and bfloat16 ("bf16"). Caches in those dtypes travel as raw 16-bit
 * patterns in Uint16Arrays, so every path that reads or writes them goes through here.
 *
 * All narrowing conversions round to nearest, ties to even (the rounding `Math.fround` uses),
 * handle subnormals exactly, overflow to ±Infinity and keep NaN a (quiet) NaN.
 */
import { KvtcError } from './errors.js';
import type { DType } from './layout.js';

// Shared scratch for reinterpreting float32 bits; module-local, so each worker thread has its own.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** Raw bits of `Math.fround(x)`. */
function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0]!;
}

/** The float32 whose raw bits are `u`, as a number. */
function f32FromBits(u: number): number {
  scratchU32[0] = u;
  return scratchF32[0]!;
}

/**
 * Raw float32 bits of `x` rounded to float32 with round-to-odd: an inexact result is replaced by
 * the neighbour whose last significand bit is 1. Narrowing a double in two steps (double → f32
 * round-to-odd → f16/bf16 round-to-nearest-even) then equals rounding the double directly, since
 * f32 carries at least 2 more significand bits than either target (Boldo & Melquiond 2008).
 * Plain `Math.fround` first would double-round, e.g. 65520 − 2⁻³⁰ would become Infinity.
 */
function f32BitsRoundToOdd(x: number): number {
  const f = Math.fround(x);
  let u = f32Bits(f);
  // f !== x is also true for NaN, hence the x === x guard.
  if (f !== x && x === x && (u & 1) === 0) {
    // Sign-magnitude bits: one step toward x in magnitude is ±1 on the raw pattern.
    u = Math.abs(f) > Math.abs(x) ? u - 1 : u + 1;
  }
  return u >>> 0;
}

/**
 * Float32 raw bits → binary16 raw bits, round to nearest even. NaN becomes a quiet NaN keeping
 * the sign and the top payload bits; values ≥ 65520 in magnitude overflow to ±Infinity.
 */
export function f32BitsToF16Bits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const abs = u & 0x7fffffff;
  if (abs >= 0x7f800000) {
    // The quiet bit (0x200) keeps NaNs whose payload lives only in the dropped low bits NaN.
    return abs > 0x7f800000 ? sign | 0x7e00 | ((abs >>> 13) & 0x3ff) : sign | 0x7c00;
  }
  // 65520 = (65504 + 65536) / 2, and 65504's last bit is odd, so the tie goes up to Infinity.
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs >= 0x38800000) {
    // Normal f16 (≥ 2⁻¹⁴): rebias the exponent (127 → 15), then round away the low 13 bits.
    // A carry out of the significand correctly bumps the exponent; the threshold above keeps it
    // below the Infinity pattern.
    const m = abs - 0x38000000;
    return sign | ((m + 0xfff + ((m >>> 13) & 1)) >>> 13);
  }
  // 2⁻²⁵ is the tie between 0 and the smallest subnormal 2⁻²⁴; even means 0.
  if (abs <= 0x33000000) return sign;
  // Subnormal f16: the result is round(|x| · 2²⁴). |x| = sig · 2^(e − 150) with a 24-bit
  // significand, so the result is sig shifted right by 126 − e (14..24 here).
  const e = abs >>> 23;
  const sig = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - e;
  const q = sig >>> shift;
  const rem = sig & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  // q may round up to 0x400, which is exactly the bit pattern of the smallest normal.
  return sign | (rem > half || (rem === half && (q & 1) === 1) ? q + 1 : q);
}

/** Binary16 raw bits → float32 raw bits (exact; NaN payloads are kept). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  let m = h & 0x3ff;
  if (e === 0x1f) return (sign | 0x7f800000 | (m << 13)) >>> 0;
  if (e !== 0) return (sign | ((e + 112) << 23) | (m << 13)) >>> 0;
  if (m === 0) return sign >>> 0;
  // Subnormal m · 2⁻²⁴: float32 has the range to normalise it, so shift the leading 1 into the
  // implicit-bit position and lower the exponent to match.
  let exp = 113;
  while ((m & 0x400) === 0) {
    m <<= 1;
    exp--;
  }
  return (sign | (exp << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

/** Float32 raw bits → bfloat16 raw bits, round to nearest even; NaN stays a (quiet) NaN. */
export function f32BitsToBf16Bits(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  // Overflow needs no special case: rounding up from the largest finite bf16 carries into the
  // exponent and lands exactly on the Infinity pattern.
  return ((u >>> 0) + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

/**
 * Rounds a number to IEEE binary16 and returns its raw bits: round to nearest, ties to even, exact
 * subnormals, |x| ≥ 65520 → ±Infinity, NaN → quiet NaN (0x7e00 or 0xfe00). The rounding is
 * done once from the full double, not via an intermediate float32 rounding.
 */
export function f32ToF16Bits(x: number): number {
  return f32BitsToF16Bits(f32BitsRoundToOdd(x));
}

/** Exact value of a binary16 bit pattern (only the low 16 bits of `h` are read). */
export function f16BitsToF32(h: number): number {
  return f32FromBits(f16BitsToF32Bits(h & 0xffff));
}

/**
 * Rounds a number to bfloat16 and returns its raw bits: round to nearest, ties to even (from the
 * full double, without double rounding), overflow → ±Infinity, NaN → quiet NaN.
 */
export function f32ToBf16Bits(x: number): number {
  return f32BitsToBf16Bits(f32BitsRoundToOdd(x));
}

/** Exact value of a bfloat16 bit pattern (only the low 16 bits of `b` are read). */
export function bf16BitsToF32(b: number): number {
  return f32FromBits(((b & 0xffff) << 16) >>> 0);
}

// f16 → f32 is a pure function of 16 bits; a 256 KiB table built on first use makes bulk
// decoding one load per element.
let f16Table: Uint32Array | undefined;
function f16ToF32Table(): Uint32Array {
  if (!f16Table) {
    const t = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) t[h] = f16BitsToF32Bits(h);
    f16Table = t;
  }
  return f16Table;
}

function checkArray(arr: ArrayBufferView, ctor: typeof Float32Array | typeof Uint16Array, dtype: DType, field: string): void {
  if (!(arr instanceof ctor)) {
    throw new KvtcError('E_LAYOUT', `${field} must be a ${ctor.name} for dtype ${dtype}, got ${arr?.constructor?.name ?? String(arr)}`);
  }
}

function checkOut(out: ArrayBufferView, ctor: typeof Float32Array | typeof Uint16Array, length: number): void {
  if (!(out instanceof ctor) || out.length !== length) {
    throw new KvtcError('E_LAYOUT', `out must be a ${ctor.name} of ${length} values, got ${out?.constructor?.name ?? String(out)} of ${(out as { length?: number }).length ?? '?'}`);
  }
}

/**
 * Converts (or copies) an array of any kvtc dtype to float32. `arr` must be a Float32Array for
 * 'f32' and a Uint16Array of raw bits for 'f16' / 'bf16'. Exact: every f16 and bf16 value is
 * representable in float32, NaN payloads included.
 *
 * @param out optional destination of the same length (may not alias `arr` for 16-bit dtypes);
 *   a new array is allocated when omitted.
 */
export function toFloat32(arr: ArrayBufferView, dtype: DType, out?: Float32Array): Float32Array {
  if (dtype === 'f32') {
    checkArray(arr, Float32Array, dtype, 'arr');
    const src = arr as Float32Array;
    if (!out) return src.slice();
    checkOut(out, Float32Array, src.length);
    out.set(src);
    return out;
  }
  checkArray(arr, Uint16Array, dtype, 'arr');
  const src = arr as Uint16Array;
  const n = src.length;
  const dst = out ?? new Float32Array(n);
  checkOut(dst, Float32Array, n);
  // Write bit patterns through an integer view so NaN payloads survive (a float store may not).
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, n);
  if (dtype === 'f16') {
    const table = f16ToF32Table();
    for (let i = 0; i < n; i++) bits[i] = table[src[i]!]!;
  } else if (dtype === 'bf16') {
    for (let i = 0; i < n; i++) bits[i] = src[i]! << 16;
  } else {
    throw new KvtcError('E_LAYOUT', `dtype must be one of f32, f16, bf16, got ${String(dtype)}`);
  }
  return dst;
}

/**
 * Converts float32 values to a kvtc dtype: a copy for 'f32', raw f16 / bf16 bits (round to
 * nearest even, overflow → ±Infinity, NaN → quiet NaN) in a Uint16Array otherwise.
 *
 * @param out optional destination of the same length and the dtype's array type; a new array is
 *   allocated when omitted.
 */
export function fromFloat32(src: Float32Array, dtype: DType, out?: Float32Array | Uint16Array): Float32Array | Uint16Array {
  checkArray(src, Float32Array, 'f32', 'src');
  const n = src.length;
  if (dtype === 'f32') {
    if (!out) return src.slice();
    checkOut(out, Float32Array, n);
    (out as Float32Array).set(src);
    return out;
  }
  if (dtype !== 'f16' && dtype !== 'bf16') {
    throw new KvtcError('E_LAYOUT', `dtype must be one of f32, f16, bf16, got ${String(dtype)}`);
  }
  const dst = out ?? new Uint16Array(n);
  checkOut(dst, Uint16Array, n);
  const d = dst as Uint16Array;
  // Read raw bits rather than float values: the inputs are already float32, so the bit-level
  // rounding is exact, and NaN payloads are visible.
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  if (dtype === 'f16') {
    for (let i = 0; i < n; i++) d[i] = f32BitsToF16Bits(bits[i]!);
  } else {
    for (let i = 0; i < n; i++) d[i] = f32BitsToBf16Bits(bits[i]!);
  }
  return d;
}
