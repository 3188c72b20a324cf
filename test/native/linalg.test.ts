/**
 * Low-level kernels through `native.internals`: the symmetric eigensolver behind calibration
 * (residuals, orthonormality, ordering, the sign convention that makes profiles deterministic,
 * degenerate and rank-deficient inputs, non-finite input), CRC-32C against published vectors and
 * a bit-by-bit reference, and the RoPE rotation kernel against the reference in the test helpers.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../../src/binding.js';
import { toKvtcError } from '../../src/errors.js';
import type { KvLayout } from '../../src/layout.js';
import { ropeFreqs } from '../../src/layout.js';
import { applyRope, gaussian, mulberry32 } from '../helpers/synthetic.js';

const { symEig, rope } = native.internals;
const crc32c = (b: Uint8Array) => native.crc32c(b);

// ---- helpers -----------------------------------------------------------------------------------

function randomSymmetric(n: number, seed: number): Float64Array {
  const g = gaussian(mulberry32(seed));
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const v = g();
      a[i * n + j] = v;
      a[j * n + i] = v;
    }
  }
  return a;
}

/** A random orthogonal matrix (rows orthonormal), by Gram–Schmidt twice. */
function randomOrthogonal(n: number, seed: number): Float64Array {
  const g = gaussian(mulberry32(seed));
  const q = Float64Array.from({ length: n * n }, () => g());
  for (let pass = 0; pass < 2; pass++) {
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < i; k++) {
        let d = 0;
        for (let j = 0; j < n; j++) d += q[i * n + j]! * q[k * n + j]!;
        for (let j = 0; j < n; j++) q[i * n + j]! -= d * q[k * n + j]!;
      }
      let norm = 0;
      for (let j = 0; j < n; j++) norm += q[i * n + j]! ** 2;
      norm = Math.sqrt(norm);
      for (let j = 0; j < n; j++) q[i * n + j]! /= norm;
    }
  }
  return q;
}

/** Qᵀ·diag(d)·Q for Q with orthonormal rows: eigenvalues d, eigenvectors the rows of Q. */
function withSpectrum(d: number[], q: Float64Array): Float64Array {
  const n = d.length;
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += q[k * n + i]! * d[k]! * q[k * n + j]!;
      a[i * n + j] = s;
    }
  // Exact symmetry (the solver may read either triangle).
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) a[j * n + i] = a[i * n + j]!;
  return a;
}

function frobenius2(a: Float64Array): number {
  let s = 0;
  for (const v of a) s += v * v;
  return s;
}

interface EigCheck {
  maxResidual: number; // max_i |A v_i - λ_i v_i| / |A|_2
  maxOrtho: number; // max |V Vᵀ - I|
  sorted: boolean;
  signOk: boolean;
}

/** Checks the documented contract of symEig's output for matrix a. */
function checkEig(a: Float64Array, n: number, values: Float64Array, vectors: Float64Array): EigCheck {
  const norm = Math.max(...Array.from(values, Math.abs), Number.MIN_VALUE);
  let maxResidual = 0;
  let maxOrtho = 0;
  let signOk = true;
  for (let i = 0; i < n; i++) {
    const v = vectors.subarray(i * n, (i + 1) * n);
    let r2 = 0;
    for (let row = 0; row < n; row++) {
      let av = 0;
      for (let k = 0; k < n; k++) av += a[row * n + k]! * v[k]!;
      r2 += (av - values[i]! * v[row]!) ** 2;
    }
    maxResidual = Math.max(maxResidual, Math.sqrt(r2) / norm);
    for (let j = 0; j < n; j++) {
      let d = 0;
      for (let k = 0; k < n; k++) d += v[k]! * vectors[j * n + k]!;
      maxOrtho = Math.max(maxOrtho, Math.abs(d - (i === j ? 1 : 0)));
    }
    // Sign convention: the largest-magnitude entry is positive.
    let arg = 0;
    for (let k = 1; k < n; k++) if (Math.abs(v[k]!) > Math.abs(v[arg]!)) arg = k;
    if (!(v[arg]! > 0)) signOk = false;
  }
  let sorted = true;
  for (let i = 1; i < n; i++) if (!(values[i - 1]! >= values[i]!)) sorted = false;
  return { maxResidual, maxOrtho, sorted, signOk };
}

function expectValidEig(a: Float64Array, n: number, opts: { sign?: boolean } = {}) {
  const input = a.slice();
  const { values, vectors } = symEig(a, n);
  expect(values).toBeInstanceOf(Float64Array);
  expect(vectors).toBeInstanceOf(Float64Array);
  expect(values.length).toBe(n);
  expect(vectors.length).toBe(n * n);
  expect(Array.from(a)).toEqual(Array.from(input)); // the caller's matrix is not destroyed
  const c = checkEig(a, n, values, vectors);
  expect(c.maxResidual).toBeLessThan(1e-9);
  expect(c.maxOrtho).toBeLessThan(1e-10);
  expect(c.sorted).toBe(true);
  if (opts.sign ?? true) expect(c.signOk).toBe(true);
  // Invariants of the spectrum: trace and Frobenius norm.
  let trace = 0;
  for (let i = 0; i < n; i++) trace += a[i * n + i]!;
  const sum = values.reduce((s, v) => s + v, 0);
  const sumSq = values.reduce((s, v) => s + v * v, 0);
  const scale = Math.sqrt(frobenius2(a)) || 1;
  expect(Math.abs(sum - trace) / (scale * Math.sqrt(n))).toBeLessThan(1e-10);
  expect(Math.abs(sumSq - frobenius2(a)) / (scale * scale)).toBeLessThan(1e-10);
  return { values, vectors };
}

function nativeCode(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    const raw = (err as { code?: unknown }).code;
    const wrapped = toKvtcError(err).code;
    expect(wrapped).toBe(raw);
    return wrapped;
  }
  throw new Error('expected the native call to throw');
}

// ---- symEig ------------------------------------------------------------------------------------

describe('native.internals.symEig', () => {
  for (const n of [1, 2, 3, 10, 64, 200]) {
    it(`random symmetric ${n}x${n}: residual, orthonormality, order, sign`, () => {
      for (const seed of n <= 10 ? [1, 2, 3, 4, 5] : [n]) {
        expectValidEig(randomSymmetric(n, seed * 1000 + n), n);
      }
    });
  }

  it('1x1 gives the value and the vector [1]', () => {
    const { values, vectors } = symEig(new Float64Array([-3.5]), 1);
    expect(Array.from(values)).toEqual([-3.5]);
    expect(Array.from(vectors)).toEqual([1]);
  });

  it('known spectrum: the (2, -1) tridiagonal matrix of size 64', () => {
    const n = 64;
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      a[i * n + i] = 2;
      if (i + 1 < n) {
        a[i * n + i + 1] = -1;
        a[(i + 1) * n + i] = -1;
      }
    }
    const { values, vectors } = expectValidEig(a, n);
    for (let i = 0; i < n; i++) {
      const k = n - i; // descending order
      expect(values[i]).toBeCloseTo(2 - 2 * Math.cos((k * Math.PI) / (n + 1)), 12);
      // Eigenvector sin(j k π / (n+1)), up to sign and scale.
      let dot = 0;
      let norm = 0;
      for (let j = 0; j < n; j++) {
        const e = Math.sin(((j + 1) * k * Math.PI) / (n + 1));
        dot += e * vectors[i * n + j]!;
        norm += e * e;
      }
      expect(Math.abs(dot) / Math.sqrt(norm)).toBeCloseTo(1, 10);
    }
  });

  it('diagonal matrix: values sorted descending, vectors the unit vectors', () => {
    const d = [0.5, -2, 7, 3, 0, -0.25, 11, 1.5];
    const n = d.length;
    const a = new Float64Array(n * n);
    d.forEach((v, i) => (a[i * n + i] = v));
    const { values, vectors } = expectValidEig(a, n);
    const order = d.map((v, i) => [v, i] as const).sort((x, y) => y[0] - x[0]);
    order.forEach(([v, idx], i) => {
      expect(values[i]).toBeCloseTo(v, 14);
      for (let k = 0; k < n; k++) expect(vectors[i * n + k]).toBeCloseTo(k === idx ? 1 : 0, 12);
    });
  });

  it('identity (one eigenvalue repeated n times)', () => {
    const n = 10;
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) a[i * n + i] = 1;
    const { values } = expectValidEig(a, n);
    for (const v of values) expect(v).toBeCloseTo(1, 14);
  });

  it('zero matrix', () => {
    const n = 6;
    const { values } = expectValidEig(new Float64Array(n * n), n);
    for (const v of values) expect(Math.abs(v)).toBeLessThan(1e-300);
  });

  it('repeated eigenvalues in a rotated basis (degenerate eigenspaces)', () => {
    const spectrum = [5, 5, 5, 2, 2, -1, 0.5, 0.5, 0.5, 0.5, -3, 4];
    const n = spectrum.length;
    const a = withSpectrum(spectrum, randomOrthogonal(n, 77));
    const { values } = expectValidEig(a, n);
    const want = [...spectrum].sort((x, y) => y - x);
    want.forEach((v, i) => expect(values[i]).toBeCloseTo(v, 11));
  });

  it('well-separated spectrum in a rotated basis: the vectors are the basis rows, signed', () => {
    const n = 16;
    const spectrum = Array.from({ length: n }, (_, i) => 10 - 1.3 * i);
    const q = randomOrthogonal(n, 5);
    const { values, vectors } = expectValidEig(withSpectrum(spectrum, q), n);
    for (let i = 0; i < n; i++) {
      expect(values[i]).toBeCloseTo(spectrum[i]!, 11);
      let dot = 0;
      for (let k = 0; k < n; k++) dot += q[i * n + k]! * vectors[i * n + k]!;
      expect(Math.abs(dot)).toBeCloseTo(1, 10);
    }
  });

  it('rank-1 matrix u·uᵀ: one eigenvalue |u|², the rest 0, first vector ±u/|u| with the sign convention', () => {
    const n = 20;
    const g = gaussian(mulberry32(3));
    const u = Array.from({ length: n }, () => g());
    const uu = u.reduce((s, x) => s + x * x, 0);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = u[i]! * u[j]!;
    const { values, vectors } = expectValidEig(a, n);
    expect(values[0]).toBeCloseTo(uu, 10);
    for (let i = 1; i < n; i++) expect(Math.abs(values[i]!)).toBeLessThan(1e-12 * uu);
    let arg = 0;
    for (let k = 1; k < n; k++) if (Math.abs(u[k]!) > Math.abs(u[arg]!)) arg = k;
    const sign = u[arg]! > 0 ? 1 : -1;
    for (let k = 0; k < n; k++) expect(vectors[k]).toBeCloseTo((sign * u[k]!) / Math.sqrt(uu), 12);
  });

  it('negative definite: values still descending (closest to zero first)', () => {
    const n = 8;
    const spectrum = [-1, -2, -3, -4, -5, -6, -7, -8];
    const { values } = expectValidEig(withSpectrum(spectrum, randomOrthogonal(n, 9)), n);
    spectrum.forEach((v, i) => expect(values[i]).toBeCloseTo(v, 11));
  });

  it('is deterministic: the same matrix gives bit-identical output', () => {
    const a = randomSymmetric(64, 42);
    const x = symEig(a, 64);
    const y = symEig(a.slice(), 64);
    expect(Buffer.from(x.values.buffer).equals(Buffer.from(y.values.buffer))).toBe(true);
    expect(Buffer.from(x.vectors.buffer).equals(Buffer.from(y.vectors.buffer))).toBe(true);
  });

  it('NaN or Inf anywhere -> E_CALIBRATION', () => {
    for (const [i, bad] of [
      [0, Number.NaN],
      [5, Number.NaN],
      [3 * 10 + 7, Infinity],
      [99, -Infinity],
    ] as const) {
      const a = randomSymmetric(10, 1);
      a[i] = bad;
      expect(nativeCode(() => symEig(a, 10)), `entry ${i} = ${bad}`).toBe('E_CALIBRATION');
    }
  });

  it('a buffer that is not n*n, or n <= 0 -> E_LAYOUT', () => {
    expect(nativeCode(() => symEig(new Float64Array(15), 4))).toBe('E_LAYOUT');
    expect(nativeCode(() => symEig(new Float64Array(0), 0))).toBe('E_LAYOUT');
    expect(nativeCode(() => symEig(new Float64Array(4), -2))).toBe('E_LAYOUT');
  });
});

// ---- crc32c ------------------------------------------------------------------------------------

/** Bitwise reference CRC-32C (reflected polynomial 0x82F63B78). */
function crc32cRef(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of data) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

describe('native.crc32c', () => {
  it('published check values', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
    // RFC 3720 (iSCSI) B.4 vectors.
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
  });

  it('the reference implementation agrees with the check values (control)', () => {
    expect(crc32cRef(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    expect(crc32cRef(new Uint8Array(32))).toBe(0x8a9136aa);
  });

  it('honours byteOffset/byteLength of a view', () => {
    const buf = new Uint8Array(20).fill(0x55);
    buf.set(new TextEncoder().encode('123456789'), 3);
    expect(crc32c(buf.subarray(3, 12))).toBe(0xe3069283);
    expect(crc32c(Buffer.from(buf.buffer, 3, 9))).toBe(0xe3069283);
  });

  it('matches the bitwise reference for every length 0..300 and random offsets, and for 1 MiB', () => {
    const rnd = mulberry32(11);
    const pool = Uint8Array.from({ length: 4096 }, () => Math.floor(rnd() * 256));
    const wrong: string[] = [];
    for (let len = 0; len <= 300; len++) {
      for (const off of [0, 1, 3, 7, Math.floor(rnd() * 1000)]) {
        const v = pool.subarray(off, off + len);
        if (crc32c(v) !== crc32cRef(v)) wrong.push(`len ${len} off ${off}`);
      }
    }
    expect(wrong).toEqual([]);
    const big = Uint8Array.from({ length: 1 << 20 }, () => Math.floor(rnd() * 256));
    expect(crc32c(big)).toBe(crc32cRef(big));
    expect(crc32c(big.subarray(5, (1 << 20) - 3))).toBe(crc32cRef(big.subarray(5, (1 << 20) - 3)));
  });

  it('detects every single-bit error in a 1 KiB buffer', () => {
    const rnd = mulberry32(5);
    const data = Uint8Array.from({ length: 1024 }, () => Math.floor(rnd() * 256));
    const base = crc32c(data);
    let same = 0;
    for (let i = 0; i < data.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        data[i]! ^= 1 << bit;
        if (crc32c(data) === base) same++;
        data[i]! ^= 1 << bit;
      }
    }
    expect(same).toBe(0);
  });

  it('a non-Uint8Array argument -> E_OPTIONS', () => {
    expect(nativeCode(() => crc32c(new Uint16Array(4) as unknown as Uint8Array))).toBe('E_OPTIONS');
    expect(nativeCode(() => crc32c('abc' as unknown as Uint8Array))).toBe('E_OPTIONS');
  });
});

// ---- rope --------------------------------------------------------------------------------------

describe('native.internals.rope', () => {
  const styles = [
    ['interleaved', 1],
    ['neox', 2],
  ] as const;
  for (const [style, code] of styles) {
    for (const dims of [16, 8]) {
      it(`${style}, rotary dims ${dims} of 16: matches the reference and the inverse undoes it`, () => {
        const layout: KvLayout = { layers: 1, kvHeads: 3, headDim: 16, dtype: 'f32', rope: { theta: 10000, style, dims } };
        const tokens = 50;
        const g = gaussian(mulberry32(dims + code));
        const x = Float32Array.from({ length: tokens * 3 * 16 }, () => g());
        const positions = Int32Array.from({ length: tokens }, (_, i) => (i * 37) % 4000);
        const freqs = ropeFreqs(layout.rope!, 16);
        const ref = x.slice();
        applyRope(ref, layout, positions);
        const got = x.slice();
        rope(got, 3, 16, code, freqs, positions, false);
        let maxErr = 0;
        for (let i = 0; i < x.length; i++) maxErr = Math.max(maxErr, Math.abs(got[i]! - ref[i]!));
        expect(maxErr).toBeLessThan(1e-4);
        // Dimensions beyond the rotary ones are untouched.
        for (let t = 0; t < tokens; t++)
          for (let h = 0; h < 3; h++)
            for (let d = dims; d < 16; d++) expect(got[(t * 3 + h) * 16 + d]).toBe(x[(t * 3 + h) * 16 + d]);
        rope(got, 3, 16, code, freqs, positions, true);
        let back = 0;
        for (let i = 0; i < x.length; i++) back = Math.max(back, Math.abs(got[i]! - x[i]!));
        expect(back).toBeLessThan(1e-5);
      });
    }
  }

  it('inconsistent shapes -> E_LAYOUT', () => {
    const freqs = new Float32Array(8);
    expect(nativeCode(() => rope(new Float32Array(10), 1, 16, 1, freqs, new Int32Array(1), false))).toBe('E_LAYOUT');
    expect(nativeCode(() => rope(new Float32Array(16), 1, 16, 1, new Float32Array(9), new Int32Array(1), false))).toBe('E_LAYOUT');
  });
});
