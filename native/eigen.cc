#include "eigen.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "errors.h"
#include "gemm_f64.h"
#include "implicit_ql.h"
#include "linalg.h"
#include "out_pages.h"
#include "tridiag_eig.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#ifdef KVTC_HAVE_OPENBLAS
#include <lapacke.h>
#endif

namespace kvtc {
namespace {

// ---- the reference solver (test-only since the fast one below; kept to compare against) -------

// Householder reduction to tridiagonal form followed by the implicit QL algorithm (the classic
// EISPACK tred2/tql2 pair). Eigenvectors are kept transposed (W[j][r] = V[r][j]) so that the QL
// rotations, the O(n^3) part, sweep contiguous memory.
void tred2_tql2(int n, std::vector<double>& a, std::vector<double>& d, std::vector<double>& W) {
  W.assign(size_t(n) * n, 0.0);
  auto V = [&](int r, int c) -> double& { return W[size_t(c) * n + r]; };
  for (int r = 0; r < n; r++)
    for (int c = 0; c < n; c++) V(r, c) = a[size_t(r) * n + c];
  d.assign(n, 0.0);
  std::vector<double> e(n, 0.0);
  for (int j = 0; j < n; j++) d[j] = V(n - 1, j);

  for (int i = n - 1; i > 0; i--) {
    double scale = 0.0, h = 0.0;
    for (int k = 0; k < i; k++) scale += std::fabs(d[k]);
    if (scale == 0.0) {
      e[i] = d[i - 1];
      for (int j = 0; j < i; j++) {
        d[j] = V(i - 1, j);
        V(i, j) = 0.0;
        V(j, i) = 0.0;
      }
    } else {
      for (int k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      double f = d[i - 1];
      double g = std::sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (int j = 0; j < i; j++) e[j] = 0.0;
      for (int j = 0; j < i; j++) {
        f = d[j];
        V(j, i) = f;
        g = e[j] + V(j, j) * f;
        double* colj = &V(0, j);  // column j of V is contiguous in W
        for (int k = j + 1; k <= i - 1; k++) {
          g += colj[k] * d[k];
          e[k] += colj[k] * f;
        }
        e[j] = g;
      }
      f = 0.0;
      for (int j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const double hh = f / (h + h);
      for (int j = 0; j < i; j++) e[j] -= hh * d[j];
      for (int j = 0; j < i; j++) {
        f = d[j];
        g = e[j];
        double* colj = &V(0, j);
        for (int k = j; k <= i - 1; k++) colj[k] -= (f * e[k] + g * d[k]);
        d[j] = V(i - 1, j);
        V(i, j) = 0.0;
      }
    }
    d[i] = h;
  }
  for (int i = 0; i < n - 1; i++) {
    V(n - 1, i) = V(i, i);
    V(i, i) = 1.0;
    const double h = d[i + 1];
    double* coli1 = &V(0, i + 1);
    if (h != 0.0) {
      for (int k = 0; k <= i; k++) d[k] = coli1[k] / h;
      for (int j = 0; j <= i; j++) {
        double* colj = &V(0, j);
        double g = 0.0;
        for (int k = 0; k <= i; k++) g += coli1[k] * colj[k];
        for (int k = 0; k <= i; k++) colj[k] -= g * d[k];
      }
    }
    for (int k = 0; k <= i; k++) coli1[k] = 0.0;
  }
  for (int j = 0; j < n; j++) {
    d[j] = V(n - 1, j);
    V(n - 1, j) = 0.0;
  }
  V(n - 1, n - 1) = 1.0;
  e[0] = 0.0;

  // tql2
  for (int i = 1; i < n; i++) e[i - 1] = e[i];
  e[n - 1] = 0.0;
  implicit_ql(n, d.data(), e.data(), W.data(), size_t(n));
}

// ---- the fast solver -----------------------------------------------------------------------
// Same contract as tred2/tql2, restructured so that most of the O(n^3) work runs as matrix
// products (at n = 1024 on an AVX-512 core about 1.7x faster than the implicit QL solver with
// recorded rotations replayed on Q that it replaced, ~9x faster than tred2/tql2;
// bench/calibration.bench.ts measures it):
//  1. Tridiagonalize with one pass over the lower triangle of the trailing matrix per step: the
//     rank-2 update of step k and the matrix-vector product of step k+1 are fused row by row.
//  2. Solve the tridiagonal matrix by divide and conquer (tridiag_eig.h): its eigenvectors come
//     out of one matrix product per merge instead of ~0.85 n^2 plane rotations of n-vectors.
//  3. Back-transform them by the reflectors of stage 1, kQBlock at a time in compact WY form:
//     three products (two of them with the block of reflectors) per kQBlock reflectors.
// The products run on the path's FP64 GEMM kernel (gemm_f64.h).
// Every step runs in a fixed order, so the output is the same bits run to run on one machine (the
// vector path chosen at run time, AVX-512, AVX2 or portable, can change the last bits).

// Householder reflector H = I - tau v v^T with H x = beta e_0, in place: x becomes v (v_0 = 1).
// Returns beta; tau = 0 (H = I) when x is already a multiple of e_0.
double householder(double* x, int len, double& tau) {
  const double x0 = x[0];
  double sigma = 0;
  for (int j = 1; j < len; j++) sigma += x[j] * x[j];
  x[0] = 1.0;
  if (len <= 1 || sigma == 0.0) {
    tau = 0.0;
    return x0;
  }
  const double nrm = std::sqrt(x0 * x0 + sigma);
  const double beta = x0 >= 0 ? -nrm : nrm;
  tau = (beta - x0) / beta;
  const double scale = 1.0 / (x0 - beta);
  for (int j = 1; j < len; j++) x[j] *= scale;
  return beta;
}

// Dot product with 8 independent partial sums combined in a fixed order, so it vectorizes
// without reassociation flags and gives the same bits for the same input on one path.
inline __attribute__((always_inline)) double dot8(const double* a, const double* b, int len) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= len; j += 8)
    for (int u = 0; u < 8; u++) acc[u] += a[j + u] * b[j + u];
  for (int u = 0; j < len; j++, u++) acc[u] += a[j] * b[j];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// One row of the fused step of stage 1 on the lower triangle: r[j] -= vi * w[j] + wi * v[j] for
// j < len (r[len-1] is the diagonal), then the symmetric product with u: returns sum_j r[j] u[j]
// (row i's own entry) and adds r[j] * ui to pp[j] for j < len-1 (row i's share of entries j).
inline __attribute__((always_inline)) double update_symv_row(double* r, const double* v, const double* w, double vi,
                                                             double wi, const double* u, double ui, double* pp,
                                                             int len) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int off = len - 1;  // off-diagonal entries
  int j = 0;
  for (; j + 8 <= off; j += 8)
    for (int q = 0; q < 8; q++) {
      const double x = r[j + q] - (vi * w[j + q] + wi * v[j + q]);
      r[j + q] = x;
      acc[q] += x * u[j + q];
      pp[j + q] += x * ui;
    }
  for (int q = 0; j < off; j++, q++) {
    const double x = r[j] - (vi * w[j] + wi * v[j]);
    r[j] = x;
    acc[q] += x * u[j];
    pp[j] += x * ui;
  }
  const double x = r[off] - (vi * w[off] + wi * v[off]);
  r[off] = x;
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + x * u[off];
}

// Stage 1: a (n x n, row-major, full symmetric storage) -> diagonal d, off-diagonal e
// (e[i] = T[i][i+1], e[n-1] = 0), reflector k in a[k][k+1..n) with v_0 = 1, and tau[k].
// After the first step only the lower triangle is read and updated (half the memory traffic,
// which is what this stage is bound by); the upper part of row k then holds reflector k.
// The rows of one fused step, one at a time (the portable and AVX2 paths): row t (t < rows) at
// R + t ld holds t + 1 entries of the lower triangle (the last on the diagonal); V1, W1 the
// rank-2 update's vectors, u the next reflector, pp += the symmetric product's entries.
inline __attribute__((always_inline)) void update_symv_rows(int rows, double* R, size_t ld, const double* V1,
                                                            const double* W1, const double* u, double* pp) {
  for (int t = 0; t < rows; t++)
    pp[t] += update_symv_row(R + size_t(t) * ld, V1, W1, V1[t], W1[t], u, u[t], pp, t + 1);
}

template <void (*Rows)(int, double*, size_t, const double*, const double*, const double*, double*)>
inline __attribute__((always_inline)) void tridiagonalize(int n, double* a, size_t ld, double* d, double* e,
                                                          double* tau) {
  std::vector<double> p(n), w(n), p2(n);
  d[0] = a[0];
  e[n - 1] = 0.0;
  if (n == 1) return;
  e[0] = householder(a + 1, n - 1, tau[0]);
  for (int i = 0; i < n - 1; i++) p[i] = tau[0] * dot8(a + (1 + i) * ld + 1, a + 1, n - 1);
  for (int k = 0; k <= n - 2; k++) {
    const int b = k + 1, m = n - 1 - k;  // the trailing block is rows/columns b..n-1 (m of them)
    const double* v = a + size_t(k) * ld + b;
    const double t = tau[k];
    const double K = 0.5 * t * dot8(p.data(), v, m);
    for (int j = 0; j < m; j++) w[j] = t == 0.0 ? 0.0 : p[j] - K * v[j];
    // Column b of the lower triangle first: it is the next reflector's input.
    const double v0 = v[0], w0 = w[0];
    double* rb = a + size_t(b) * ld + b;  // row b from the diagonal; its upper part takes the reflector
    for (int i = 0; i < m; i++) {
      double& x = a[size_t(b + i) * ld + b];
      x -= v[i] * w0 + w[i] * v0;
      rb[i] = x;
    }
    d[b] = rb[0];
    if (m == 1) break;
    e[b] = householder(rb + 1, m - 1, tau[b]);
    const double t2 = tau[b];
    const double* u = rb + 1;
    std::fill(p2.begin(), p2.begin() + (m - 1), 0.0);
    Rows(m - 1, a + size_t(b + 1) * ld + b + 1, ld, v + 1, w.data() + 1, u, p2.data());
    for (int i = 0; i < m - 1; i++) p2[i] *= t2;
    std::swap(p, p2);
  }
}

// Stage 3: E (n x n, row stride lde; row i = eigenvector i of T) <- E Q^T with Q = H_0 ... H_{n-3},
// so that row i becomes the eigenvector of the input. Q^T = H_{n-3} ... H_0, applied left to right
// in blocks of kQBlock reflectors from the last: a block's product H_{k0+nb-1} ... H_{k0} is
// I - V T^T V^T (V: the reflectors as columns, T upper triangular; compact WY form), so each block
// costs E[:, b:] -= ((E[:, b:] V) T^T) V^T, three products on the GEMM kernel.
constexpr int kQBlock = 32;

void back_transform(int n, const double* a, size_t lda, const double* tau, double* E, size_t lde, GemmF64Fn gemm) {
  const int last = n - 3;  // reflectors 0..n-3 (the last two steps need none)
  if (last < 0) return;
  std::vector<double> V(size_t(n) * kQBlock), Vt(size_t(kQBlock) * n), Y(size_t(n) * kQBlock),
      Y2(size_t(n) * kQBlock), Tt(size_t(kQBlock) * kQBlock);
  double T[kQBlock][kQBlock];
  for (int k0 = last / kQBlock * kQBlock; k0 >= 0; k0 -= kQBlock) {
    const int nb = std::min(kQBlock, last + 1 - k0);
    const int b = k0 + 1, m = n - b;  // the block acts on columns b..n-1
    // V (m x kQBlock): column r is reflector k0 + r, which starts at row r with a unit entry;
    // columns past nb stay zero (with zero T they change nothing).
    std::fill(V.begin(), V.begin() + size_t(m) * kQBlock, 0.0);
    for (int r = 0; r < nb; r++) {
      const double* v = a + size_t(k0 + r) * lda + b + r;
      for (int i = r; i < m; i++) V[size_t(i) * kQBlock + r] = v[i - r];
    }
    for (int r = 0; r < kQBlock; r++)
      for (int i = 0; i < m; i++) Vt[size_t(r) * m + i] = V[size_t(i) * kQBlock + r];
    // T (forward, columnwise): T[r][r] = tau_r, T[0..r, r] = -tau_r T[0..r, 0..r] V^T v_r.
    for (int r = 0; r < kQBlock; r++)
      for (int c = 0; c < kQBlock; c++) T[r][c] = 0.0;
    for (int r = 0; r < nb; r++) {
      const double t = tau[k0 + r];
      T[r][r] = t;
      double z[kQBlock];
      for (int c = 0; c < r; c++) z[c] = dot8(Vt.data() + size_t(c) * m + r, Vt.data() + size_t(r) * m + r, m - r);
      for (int c = 0; c < r; c++) {
        double s = 0;
        for (int u = c; u < r; u++) s += T[c][u] * z[u];
        T[c][r] = -t * s;
      }
    }
    // Tt = -T^T, so that the last product accumulates.
    for (int r = 0; r < kQBlock; r++)
      for (int c = 0; c < kQBlock; c++) Tt[size_t(c) * kQBlock + r] = -T[r][c];
    gemm(n, kQBlock, m, E + b, int(lde), V.data(), kQBlock, Y.data(), kQBlock, false);
    gemm(n, kQBlock, kQBlock, Y.data(), kQBlock, Tt.data(), kQBlock, Y2.data(), kQBlock, false);
    gemm(n, m, kQBlock, Y2.data(), kQBlock, Vt.data(), m, E + b, int(lde), true);
  }
}

struct Kernels {
  const char* name;
  void (*tridiagonalize)(int, double*, size_t, double*, double*, double*);
  GemmF64Fn gemm;
};

void tridiagonalize_generic(int n, double* a, size_t ld, double* d, double* e, double* tau) {
  tridiagonalize<update_symv_rows>(n, a, ld, d, e, tau);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void tridiagonalize_avx2(int n, double* a, size_t ld, double* d, double* e,
                                                          double* tau) {
  tridiagonalize<update_symv_rows>(n, a, ld, d, e, tau);
}

// Eight columns j.. of four rows of update_symv_rows_avx512 (Masked: the first bits of mk only).
template <bool Masked>
__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"), always_inline)) inline void symv_step4(
    int j, __mmask8 mk, double* const* r, const double* V1, const double* W1, const double* u, double* pp,
    const __m512d* vi, const __m512d* wi, const __m512d* ui, __m512d* acc) {
#define KVTC_LOAD(p) (Masked ? _mm512_maskz_loadu_pd(mk, (p)) : _mm512_loadu_pd(p))
  const __m512d wv = KVTC_LOAD(W1 + j), vv = KVTC_LOAD(V1 + j), uv = KVTC_LOAD(u + j);
  __m512d pv = KVTC_LOAD(pp + j);
#pragma GCC unroll 4
  for (int q = 0; q < 4; q++) {
    __m512d x = KVTC_LOAD(r[q] + j);
    x = _mm512_fnmadd_pd(vi[q], wv, x);
    x = _mm512_fnmadd_pd(wi[q], vv, x);
    if (Masked)
      _mm512_mask_storeu_pd(r[q] + j, mk, x);
    else
      _mm512_storeu_pd(r[q] + j, x);
    acc[q] = _mm512_fmadd_pd(x, uv, acc[q]);
    pv = _mm512_fmadd_pd(x, ui[q], pv);
  }
  if (Masked)
    _mm512_mask_storeu_pd(pp + j, mk, pv);
  else
    _mm512_storeu_pd(pp + j, pv);
#undef KVTC_LOAD
}

// The rows of one fused step four at a time: over the part of the rows they share, the loads of
// V1, W1, u and pp (and the store of pp) serve four rows instead of one, which is what bounds the
// one-row loop; each row's own tail and diagonal entries follow, one by one.
__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))) void update_symv_rows_avx512(
    int rows, double* R, size_t ld, const double* __restrict__ V1, const double* __restrict__ W1,
    const double* __restrict__ u, double* __restrict__ pp) {
  int t = 0;
  for (; t + 4 <= rows; t += 4) {
    double* r[4] = {R + size_t(t) * ld, R + size_t(t + 1) * ld, R + size_t(t + 2) * ld, R + size_t(t + 3) * ld};
    __m512d vi[4], wi[4], ui[4], acc[4];
    for (int q = 0; q < 4; q++) {
      vi[q] = _mm512_set1_pd(V1[t + q]);
      wi[q] = _mm512_set1_pd(W1[t + q]);
      ui[q] = _mm512_set1_pd(u[t + q]);
      acc[q] = _mm512_setzero_pd();
    }
    // Columns [0, t): off the diagonal in all four rows (full vectors, then one masked).
    int j = 0;
    for (; j + 8 <= t; j += 8) symv_step4<false>(j, 0xff, r, V1, W1, u, pp, vi, wi, ui, acc);
    if (j < t) symv_step4<true>(j, __mmask8((1u << (t - j)) - 1), r, V1, W1, u, pp, vi, wi, ui, acc);
    // Columns t .. t+3: row q's entries t .. t+q (its diagonal last).
    double own[4];
    for (int q = 0; q < 4; q++) {
      alignas(64) double l[8];
      _mm512_store_pd(l, acc[q]);
      own[q] = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
    }
    for (int q = 0; q < 4; q++) {
      const int tq = t + q;
      for (int c = t; c <= tq; c++) {
        const double x = r[q][c] - (V1[tq] * W1[c] + W1[tq] * V1[c]);
        r[q][c] = x;
        own[q] += x * u[c];
        if (c < tq) pp[c] += x * u[tq];
      }
    }
    for (int q = 0; q < 4; q++) pp[t + q] += own[q];
  }
  for (; t < rows; t++) pp[t] += update_symv_row(R + size_t(t) * ld, V1, W1, V1[t], W1[t], u, u[t], pp, t + 1);
}
__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))) void tridiagonalize_avx512(int n, double* a, size_t ld,
                                                                                       double* d, double* e,
                                                                                       double* tau) {
  tridiagonalize<update_symv_rows_avx512>(n, a, ld, d, e, tau);
}
#endif

const Kernels& kernels_for(const char* path) {
  static const Kernels generic{"generic", tridiagonalize_generic, gemm_f64};
#if defined(__x86_64__)
  static const Kernels avx2{"avx2", tridiagonalize_avx2, gemm_f64_avx2};
  static const Kernels avx512{"avx512", tridiagonalize_avx512, gemm_f64_avx512};
  if (std::strcmp(path, "avx512") == 0) return avx512;
  if (std::strcmp(path, "avx2") == 0) return avx2;
#endif
  return generic;
}

// Descending order (stable, so equal eigenvalues keep the solver's order) and the sign rule.
// W: eigenvector j of d[j] is row j (row stride ldw).
void sort_and_sign(int n, const std::vector<double>& d, const double* W, size_t ldw, std::vector<double>& evals,
                   std::vector<double>& evecs) {
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return d[x] > d[y]; });
  evals.resize(n);
  if (evecs.capacity() < size_t(n) * n) {
    std::vector<double>().swap(evecs);
    evecs.reserve(size_t(n) * n);
    prepare_output_pages(evecs.data(), size_t(n) * n * sizeof(double));
  }
  evecs.resize(size_t(n) * n);
  for (int i = 0; i < n; i++) {
    const int src = order[i];
    evals[i] = d[src];
    double* v = &evecs[size_t(i) * n];
    std::memcpy(v, W + size_t(src) * ldw, sizeof(double) * n);
    int arg = 0;
    for (int k = 1; k < n; k++)
      if (std::fabs(v[k]) > std::fabs(v[arg])) arg = k;
    if (v[arg] < 0)
      for (int k = 0; k < n; k++) v[k] = -v[k];
  }
}

// The fast solver's n x n buffers (the padded copy of the input, then the eigenvectors being
// built), kept per thread between calls: calibration runs one decomposition per stream group on
// each thread, and fresh memory would cost a page fault and a zero fill per page every time.
struct Scratch {
  std::vector<double> A, E;
};
Scratch& thread_scratch() {
  static thread_local Scratch s;
  return s;
}

void check_finite(const std::vector<double>& a) {
  for (double v : a)
    if (!std::isfinite(v)) fail("E_CALIBRATION", "covariance holds NaN or Inf; calibration samples must be finite");
}

}  // namespace

const char* sym_eig_path() {
#if defined(__x86_64__)
  static const char* const path = [] {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
      return "avx512";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
    return "generic";
  }();
  return path;
#else
  return "generic";
#endif
}

bool sym_eig_path_supported(const char* path) {
  if (std::strcmp(path, "generic") == 0) return true;
  const char* best = sym_eig_path();
  if (std::strcmp(path, "avx2") == 0) return std::strcmp(best, "generic") != 0;
  if (std::strcmp(path, "avx512") == 0) return std::strcmp(best, "avx512") == 0;
  return false;
}

void sym_eig_desc(int n, std::vector<double>& a, std::vector<double>& evals, std::vector<double>& evecs,
                  const char* path) {
  check_finite(a);
#ifdef KVTC_HAVE_OPENBLAS
  if (!path) return sym_eig_desc_reference(n, a, evals, evecs);
#endif
  const Kernels& kr = kernels_for(path ? path : sym_eig_path());
  // Row strides off the power of two (here and for E) keep the rows that one step walks, and the
  // products' column strips, from colliding in the cache sets: at n = 1024 the rows are 8 KiB
  // apart otherwise.
  const size_t ld = size_t(n) + 8;
  Scratch& sc = thread_scratch();
  std::vector<double>& A = sc.A;
  std::vector<double>& E = sc.E;
  for (std::vector<double>* v : {&A, &E})
    if (v->capacity() < ld * n) {
      std::vector<double>().swap(*v);
      v->reserve(ld * n);
      prepare_output_pages(v->data(), ld * n * sizeof(double));
    }
  A.resize(ld * n);
  for (int i = 0; i < n; i++) std::memcpy(&A[i * ld], &a[size_t(i) * n], sizeof(double) * n);
  std::vector<double> d(n), e(n), tau(n, 0.0);
  kr.tridiagonalize(n, A.data(), ld, d.data(), e.data(), tau.data());
  for (double v : d)
    if (!std::isfinite(v)) fail("E_CALIBRATION", "eigensolver overflowed (covariance entries too large)");
  for (double v : e)
    if (!std::isfinite(v)) fail("E_CALIBRATION", "eigensolver overflowed (covariance entries too large)");
  const size_t lde = ld;
  E.resize(lde * n);
  tridiag_eig(n, d.data(), e.data(), E.data(), lde, kr.gemm, kr.name);
  back_transform(n, A.data(), ld, tau.data(), E.data(), lde, kr.gemm);
  sort_and_sign(n, d, E.data(), lde, evals, evecs);
  // Entries near the overflow threshold can overflow in the secular equation: the typed error,
  // never a silent NaN.
  for (double v : evals)
    if (!std::isfinite(v)) fail("E_CALIBRATION", "eigensolver overflowed (covariance entries too large)");
  for (double v : evecs)
    if (!std::isfinite(v)) fail("E_CALIBRATION", "eigensolver overflowed (covariance entries too large)");
}

void sym_eig_release_scratch() {
  thread_scratch() = Scratch();
  tridiag_eig_release();
}

void sym_eig_desc_reference(int n, std::vector<double>& a, std::vector<double>& evals, std::vector<double>& evecs) {
  check_finite(a);
  std::vector<double> d, W;
#ifdef KVTC_HAVE_OPENBLAS
  d.assign(n, 0.0);
  W = a;  // LAPACKE row-major: on exit row-major matrix whose columns are eigenvectors
  if (LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'U', n, W.data(), n, d.data()) != 0)
    fail("E_CALIBRATION", "LAPACKE_dsyevd failed");
  // Column-major storage of a symmetric input == row-major; column j of the result is W[j*n...].
#else
  if (n == 1) {
    d = {a[0]};
    W = {1.0};
  } else {
    tred2_tql2(n, a, d, W);
  }
#endif
  sort_and_sign(n, d, W.data(), size_t(n), evals, evecs);
}

}  // namespace kvtc
