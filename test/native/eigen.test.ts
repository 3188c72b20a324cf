/**
 * The fast symmetric eigensolver at the sizes calibration uses (p = 1024 and odd sizes that leave
 * ragged replay panels and vector tails), on every vector path this CPU has, against the documented
 * contract (residual, orthonormality, order, sign) and against the classic tred2/tql2 solver kept as
 * the 'reference' path: same eigenvalues, same vectors where eigenvalues are separated, same
 * invariant subspaces where they cluster.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../../src/binding.js';
import { toKvtcError } from '../../src/errors.js';
import { gaussian, mulberry32 } from '../helpers/synthetic.js';
import { eigenQuality } from '../helpers/eigen-quality.js';

const { symEig, symEigPath } = native.internals;
const best = symEigPath();
/** Vector paths this CPU can run; 'generic' always. */
const paths = ['generic', ...(best !== 'generic' ? ['avx2'] : []), ...(best === 'avx512' ? ['avx512'] : [])];

/** Covariance of `samples` draws of rank-16 structure plus noise (the calibration's spectrum). */
function covarianceLike(n: number, samples: number, seed: number): Float64Array {
  const g = gaussian(mulberry32(seed));
  const load = Float64Array.from({ length: 16 * n }, () => g());
  const x = new Float64Array(n);
  const c = new Float64Array(n * n);
  for (let t = 0; t < samples; t++) {
    for (let j = 0; j < n; j++) x[j] = 0.05 * g();
    for (let r = 0; r < 16; r++) {
      const z = g() / (1 + r);
      for (let j = 0; j < n; j++) x[j]! += z * load[r * n + j]!;
    }
    for (let i = 0; i < n; i++) {
      const xi = x[i]!;
      for (let j = i; j < n; j++) c[i * n + j]! += xi * x[j]!;
    }
  }
  for (let i = 0; i < n; i++)
    for (let j = i; j < n; j++) {
      c[i * n + j]! /= samples;
      c[j * n + i] = c[i * n + j]!;
    }
  return c;
}

/** Random orthogonal matrix (rows orthonormal) as a product of Householder reflections. */
function randomOrthogonal(n: number, seed: number, reflections = 8): Float64Array {
  const g = gaussian(mulberry32(seed));
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  const v = new Float64Array(n);
  const w = new Float64Array(n);
  for (let h = 0; h < reflections; h++) {
    let norm = 0;
    for (let j = 0; j < n; j++) norm += (v[j] = g()) ** 2;
    const s = 2 / norm;
    // q <- q (I - s v v^T)
    for (let i = 0; i < n; i++) {
      let d = 0;
      for (let j = 0; j < n; j++) d += q[i * n + j]! * v[j]!;
      w[i] = d * s;
    }
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) q[i * n + j]! -= w[i]! * v[j]!;
  }
  return q;
}

/** Q^T diag(d) Q: eigenvalues d, eigenvectors the rows of Q. */
function withSpectrum(d: number[], q: Float64Array): Float64Array {
  const n = d.length;
  const a = new Float64Array(n * n);
  const col = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) col[k] = q[k * n + i]! * d[k]!;
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += col[k]! * q[k * n + j]!;
      a[i * n + j] = s;
      a[j * n + i] = s;
    }
  }
  return a;
}

function expectContract(a: Float64Array, n: number, path?: string) {
  const input = a.slice();
  const out = symEig(a, n, path);
  expect(Array.from(a.subarray(0, Math.min(a.length, 4096)))).toEqual(Array.from(input.subarray(0, 4096)));
  const q = eigenQuality(a, n, out.values, out.vectors);
  expect(q.residual, `residual n=${n} ${path}`).toBeLessThan(1e-12);
  expect(q.ortho, `orthogonality n=${n} ${path}`).toBeLessThan(1e-12);
  expect(q.sorted).toBe(true);
  expect(q.signOk).toBe(true);
  return out;
}

/**
 * Compares two decompositions of one matrix: eigenvalues within tol·|l|max; for each group of
 * eigenvalues closer than `gap`·|l|max, the two invariant subspaces agree (their orthogonal
 * projections match on random probes), and a vector of a separated eigenvalue agrees entry by
 * entry (both follow the sign rule).
 */
function expectSameDecomposition(
  n: number,
  a: { values: Float64Array; vectors: Float64Array },
  b: { values: Float64Array; vectors: Float64Array },
  tol = 1e-12,
  gap = 1e-6,
) {
  const scale = Math.max(Math.abs(a.values[0]!), Math.abs(a.values[n - 1]!));
  for (let i = 0; i < n; i++) expect(Math.abs(a.values[i]! - b.values[i]!)).toBeLessThan(tol * scale);
  let start = 0;
  let groups = 0;
  while (start < n) {
    let end = start + 1;
    while (end < n && a.values[end - 1]! - a.values[end]! < gap * scale) end++;
    const size = end - start;
    if (size === 1) {
      let diff = 0;
      for (let k = 0; k < n; k++) diff = Math.max(diff, Math.abs(a.vectors[start * n + k]! - b.vectors[start * n + k]!));
      // Perturbation of a vector ~ eps |A| / gap; gaps here are >= 1e-6 |A|.
      expect(diff, `vector ${start}`).toBeLessThan(1e-7);
    } else {
      // Same invariant subspace: the two orthogonal projections agree on random probe vectors.
      const g = gaussian(mulberry32(start + 1));
      for (let probe = 0; probe < 3; probe++) {
        const x = Float64Array.from({ length: n }, () => g());
        const pa = new Float64Array(n);
        const pb = new Float64Array(n);
        for (const [dec, out] of [[a, pa], [b, pb]] as const) {
          for (let i = start; i < end; i++) {
            const v = dec.vectors.subarray(i * n, (i + 1) * n);
            let d = 0;
            for (let k = 0; k < n; k++) d += v[k]! * x[k]!;
            for (let k = 0; k < n; k++) out[k]! += d * v[k]!;
          }
        }
        let diff = 0;
        let norm = 0;
        for (let k = 0; k < n; k++) {
          diff += (pa[k]! - pb[k]!) ** 2;
          norm += x[k]! ** 2;
        }
        expect(Math.sqrt(diff / norm), `subspace of eigenvalues ${start}..${end - 1}`).toBeLessThan(1e-7);
      }
      groups++;
    }
    start = end;
  }
  return groups;
}

function nativeCode(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return toKvtcError(err).code;
  }
  throw new Error('expected the native call to throw');
}

describe('native.internals.symEig: the fast solver at calibration sizes', () => {
  it(`names its path (${best})`, () => {
    expect(['avx512', 'avx2', 'generic']).toContain(best);
  });

  for (const n of [33, 257, 1000]) {
    // 1000: from 200 samples, so rank-deficient (an 800-fold cluster at zero); this path only.
    const on = n === 1000 ? [best] : paths;
    it(`covariance-like ${n}x${n}: contract on ${on.join(', ')} and agreement with tred2/tql2`, () => {
      const a = covarianceLike(n, n === 1000 ? 200 : 2 * n, n);
      const ref = n === 1000 ? symEig(a, n, 'reference') : expectContract(a, n, 'reference');
      for (const path of on) expectSameDecomposition(n, expectContract(a, n, path), ref);
    });
  }

  it('1024x1024 covariance (the 8B-shaped 1-layer group): contract, and the same decomposition as tred2/tql2', () => {
    const n = 1024;
    const a = covarianceLike(n, 1020, 1024);
    const fast = expectContract(a, n);
    const ref = symEig(a, n, 'reference');
    // The spectrum here is 16 separated values and a noise bulk whose neighbours are close:
    // compare vectors where separated and subspaces where clustered.
    expectSameDecomposition(n, fast, ref);
  });

  it('clustered and repeated eigenvalues (257: exact repeats, 1e-13 clusters, a zero block)', () => {
    const n = 257;
    const d: number[] = [];
    for (let i = 0; i < n; i++) {
      if (i < 40) d.push(3); // exact repeat
      else if (i < 90) d.push(1 + 1e-13 * i); // tight cluster
      else if (i < 120) d.push(0); // null space
      else d.push(-2 + (i - 120) * 0.01); // separated values
    }
    const a = withSpectrum(d, randomOrthogonal(n, 5));
    const ref = expectContract(a, n, 'reference');
    const want = [...d].sort((x, y) => y - x);
    for (const path of paths) {
      const out = expectContract(a, n, path);
      for (let i = 0; i < n; i++) expect(Math.abs(out.values[i]! - want[i]!)).toBeLessThan(1e-12 * 3);
      const groups = expectSameDecomposition(n, out, ref, 1e-12, 1e-9);
      expect(groups).toBeGreaterThanOrEqual(3); // the repeats, the cluster and the null block
    }
  });

  it('a graded spectrum over 30 orders of magnitude (small eigenvalues keep relative accuracy in |A|)', () => {
    const n = 100;
    const d = Array.from({ length: n }, (_, i) => 10 ** (-i * 0.3));
    const a = withSpectrum(d, randomOrthogonal(n, 9));
    for (const path of paths) {
      const out = expectContract(a, n, path);
      for (let i = 0; i < n; i++) expect(Math.abs(out.values[i]! - d[i]!)).toBeLessThan(1e-14);
    }
  });

  it('tridiagonal and diagonal inputs (Householder steps with nothing to reflect)', () => {
    for (const n of [2, 3, 65, 130]) {
      const tri = new Float64Array(n * n);
      const diag = new Float64Array(n * n);
      for (let i = 0; i < n; i++) {
        tri[i * n + i] = 2;
        diag[i * n + i] = (i * 7) % 5;
        if (i + 1 < n) tri[i * n + i + 1] = tri[(i + 1) * n + i] = -1;
      }
      for (const path of paths) {
        const t = expectContract(tri, n, path);
        for (let i = 0; i < n; i++) expect(t.values[i]).toBeCloseTo(2 - 2 * Math.cos(((n - i) * Math.PI) / (n + 1)), 12);
        expectContract(diag, n, path);
      }
    }
  });

  it('is deterministic on each path: the same matrix twice gives bit-identical output', () => {
    const n = 257;
    const a = covarianceLike(n, 300, 3);
    for (const path of paths) {
      const x = symEig(a, n, path);
      const y = symEig(a.slice(), n, path);
      expect(Buffer.from(x.values.buffer).equals(Buffer.from(y.values.buffer)), path).toBe(true);
      expect(Buffer.from(x.vectors.buffer).equals(Buffer.from(y.vectors.buffer)), path).toBe(true);
    }
  });

  it('NaN or Inf -> E_CALIBRATION on every path; an unknown path -> E_OPTIONS', () => {
    const n = 70;
    const a = covarianceLike(n, 100, 1);
    a[n * 5 + 9] = Number.NaN;
    for (const path of [...paths, 'reference']) expect(nativeCode(() => symEig(a, n, path)), path).toBe('E_CALIBRATION');
    a[n * 5 + 9] = Infinity;
    expect(nativeCode(() => symEig(a, n))).toBe('E_CALIBRATION');
    expect(nativeCode(() => symEig(covarianceLike(4, 8, 1), 4, 'sse9'))).toBe('E_OPTIONS');
  });

  it('entries too large to square: E_CALIBRATION, never a silent NaN', () => {
    const n = 16;
    const a = covarianceLike(n, 40, 2).map((x) => x * 1e300);
    // Either a finite decomposition honouring the contract, or the typed error.
    try {
      const out = symEig(a, n);
      for (const v of out.values) expect(Number.isFinite(v)).toBe(true);
      for (const v of out.vectors) expect(Number.isFinite(v)).toBe(true);
    } catch (err) {
      expect(toKvtcError(err).code).toBe('E_CALIBRATION');
    }
  });
});

/** A symmetric tridiagonal matrix as a dense n x n array. */
function tridiagonal(d: number[], e: number[]): Float64Array {
  const n = d.length;
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    a[i * n + i] = d[i]!;
    if (i + 1 < n) a[i * n + i + 1] = a[(i + 1) * n + i] = e[i]!;
  }
  return a;
}

// The tridiagonal stage is divide and conquer (native/tridiag_eig.cc): blocks of more than 32 rows
// are torn in two and merged through a secular equation, with deflation where a merge's rank-one
// coupling is below the noise or two of its poles are closer than the noise. These inputs are
// already tridiagonal, so the Householder stage passes them through and the merges see exactly
// their structure.
describe('native.internals.symEig: the divide-and-conquer stage', () => {
  it('glued Wilkinson matrices (pairs of eigenvalues equal to 1e-14 across merge halves)', () => {
    // 12 copies of W21+ (diagonal |10 - i|, off-diagonal 1) glued by 1e-10: n = 252, nearly
    // every eigenvalue 12-fold to within ~1e-10, the hardest case for close-pole deflation.
    const d: number[] = [];
    const e: number[] = [];
    for (let b = 0; b < 12; b++)
      for (let i = 0; i < 21; i++) {
        d.push(Math.abs(10 - i));
        e.push(i < 20 ? 1 : 1e-10);
      }
    const n = d.length;
    const a = tridiagonal(d, e);
    const ref = expectContract(a, n, 'reference');
    for (const path of paths) expectSameDecomposition(n, expectContract(a, n, path), ref, 1e-12, 1e-6);
  });

  it('a zero coupling at a tear, and equal diagonals on both sides of it (full deflation)', () => {
    const n = 128;
    const d = Array.from({ length: n }, (_, i) => (i < 64 ? 1 + (i % 5) : 1 + ((i - 64) % 5)));
    const e = Array.from({ length: n - 1 }, (_, i) => (i === 63 ? 0 : i % 9 === 0 ? 1e-300 : 0.25));
    const a = tridiagonal(d, e);
    const ref = expectContract(a, n, 'reference');
    for (const path of paths) expectSameDecomposition(n, expectContract(a, n, path), ref, 1e-12, 1e-6);
  });

  it('graded couplings (1 down to 1e-200) and a rank-one coupled spectrum at n = 300', () => {
    const n = 300;
    const d = Array.from({ length: n }, (_, i) => Math.sin(i) * 3);
    const e = Array.from({ length: n - 1 }, (_, i) => 10 ** (-(i % 200)));
    const a = tridiagonal(d, e);
    const ref = expectContract(a, n, 'reference');
    for (const path of paths) expectSameDecomposition(n, expectContract(a, n, path), ref, 1e-12, 1e-6);
  });
});
