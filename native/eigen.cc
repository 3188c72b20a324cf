#include "eigen.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "errors.h"

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
  double f = 0.0, tst1 = 0.0;
  const double eps = std::ldexp(1.0, -52);
  for (int l = 0; l < n; l++) {
    tst1 = std::max(tst1, std::fabs(d[l]) + std::fabs(e[l]));
    int m = l;
    while (m < n) {
      if (std::fabs(e[m]) <= eps * tst1) break;
      m++;
    }
    if (m == n) m = n - 1;
    if (m > l) {
      int iter = 0;
      do {
        if (++iter > 200) fail("E_CALIBRATION", "eigensolver did not converge (covariance has NaN/Inf?)");
        double g = d[l];
        double p = (d[l + 1] - g) / (2.0 * e[l]);
        double r = std::hypot(p, 1.0);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const double dl1 = d[l + 1];
        double h = g - d[l];
        for (int i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        double c = 1.0, c2 = 1.0, c3 = 1.0;
        const double el1 = e[l + 1];
        double s = 0.0, s2 = 0.0;
        for (int i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = std::hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          double* wi = &W[size_t(i) * n];
          double* wi1 = &W[size_t(i + 1) * n];
          for (int k = 0; k < n; k++) {
            const double hk = wi1[k];
            wi1[k] = s * wi[k] + c * hk;
            wi[k] = c * wi[k] - s * hk;
          }
        }
        p = -s * s2 * c3 * el1 * e[l] / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (std::fabs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0.0;
  }
}

// ---- the fast solver -----------------------------------------------------------------------
// Same mathematics as tred2/tql2 (Householder tridiagonalization, implicit QL with Wilkinson
// shifts), restructured so the O(n^3) work streams through cache with wide vectors (about 4x
// faster at n = 1024 on an AVX-512 core; bench/calibration.bench.ts measures it):
//  1. Tridiagonalize with one pass over the lower triangle of the trailing matrix per step: the
//     rank-2 update of step k and the matrix-vector product of step k+1 are fused row by row.
//  2. Accumulate Q from the reflectors backwards, 16 at a time in compact WY form (two passes
//     over the trailing block per 16 reflectors).
//  3. Run QL on the tridiagonal matrix without vectors, recording every plane rotation. The
//     rotations do not depend on the vectors, so they are then replayed on Q^T one panel of
//     kBlock columns at a time: a panel (n rows x kBlock, contiguous) stays in L2 while every
//     rotation passes over it, and the row one rotation hands to the next stays in registers.
// Every step runs in a fixed order, so the output is the same bits run to run on one machine (the
// vector path chosen at run time, AVX-512, AVX2 or portable, can change the last bits).

constexpr int kR512 = 8;  // zmm registers carried per replay pass (8 doubles each)
constexpr int kR2 = 8;    // ymm registers carried per replay pass (4 doubles each)
constexpr int kBlock = 64;  // columns per replay panel (the last panel is zero-padded)

// The rotations of one QL sweep: rows (i, i+1) for i = m-1 down to l, cos/sin pairs at cs[off..].
struct Sweep {
  int l, m;
  size_t off;
};

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
inline __attribute__((always_inline)) void tridiagonalize(int n, double* a, double* d, double* e, double* tau) {
  const size_t ld = size_t(n);
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
    for (int i = 1; i < m; i++)
      p2[i - 1] += update_symv_row(a + size_t(b + i) * ld + b + 1, v + 1, w.data() + 1, v[i], w[i], u, u[i - 1],
                                   p2.data(), i);
    for (int i = 0; i < m - 1; i++) p2[i] *= t2;
    std::swap(p, p2);
  }
}

// Stage 2: q (n x n, row stride ldq) = H_0 H_1 ... H_{n-3}, accumulated backwards from the
// identity kQBlock reflectors at a time: their product is I - V T V^T (V: m x kQBlock, the
// reflectors as columns; T upper triangular), so each block costs two passes over the trailing
// block of q (X = V^T q, then q -= V (T X)) instead of two per reflector.
constexpr int kQBlock = 16;

// X (kQBlock x m, row stride m) = V^T Q; V: m x kQBlock row-major; Q: m x m, row stride ldq.
inline __attribute__((always_inline)) void vt_q_portable(int m, const double* V, const double* Q, size_t ldq,
                                                         double* X) {
  std::fill(X, X + size_t(kQBlock) * m, 0.0);
  for (int i = 0; i < m; i++) {
    const double* qi = Q + size_t(i) * ldq;
    for (int r = 0; r < kQBlock; r++) {
      const double vir = V[size_t(i) * kQBlock + r];
      if (vir == 0.0) continue;
      double* xr = X + size_t(r) * m;
      for (int j = 0; j < m; j++) xr[j] += vir * qi[j];
    }
  }
}

// Q -= V Y; Y: kQBlock x m, row stride m.
inline __attribute__((always_inline)) void q_minus_vy_portable(int m, const double* V, const double* Y, double* Q,
                                                               size_t ldq) {
  for (int i = 0; i < m; i++) {
    double* qi = Q + size_t(i) * ldq;
    for (int r = 0; r < kQBlock; r++) {
      const double vir = V[size_t(i) * kQBlock + r];
      if (vir == 0.0) continue;
      const double* yr = Y + size_t(r) * m;
      for (int j = 0; j < m; j++) qi[j] -= vir * yr[j];
    }
  }
}

using VtQFn = void (*)(int, const double*, const double*, size_t, double*);
using QmVYFn = void (*)(int, const double*, const double*, double*, size_t);

void accumulate_q(int n, const double* a, const double* tau, double* q, size_t ldq, VtQFn vt_q, QmVYFn q_minus_vy) {
  const size_t lda = size_t(n);
  for (int i = 0; i < n; i++) {
    std::fill(q + i * ldq, q + i * ldq + n, 0.0);
    q[i * ldq + i] = 1.0;
  }
  const int last = n - 3;  // reflectors 0..n-3 (the last two steps need none)
  if (last < 0) return;
  std::vector<double> V(size_t(n) * kQBlock), X(size_t(kQBlock) * n), Y(size_t(kQBlock) * n);
  double T[kQBlock][kQBlock];
  for (int k0 = last / kQBlock * kQBlock; k0 >= 0; k0 -= kQBlock) {
    const int nb = std::min(kQBlock, last + 1 - k0);
    const int b = k0 + 1, m = n - b;  // the block acts on rows and columns b..n-1
    // V: column r is reflector k0 + r, which starts at row b + r with a unit entry.
    std::fill(V.begin(), V.begin() + size_t(m) * kQBlock, 0.0);
    for (int r = 0; r < nb; r++) {
      const double* v = a + size_t(k0 + r) * lda + b + r;
      for (int i = r; i < m; i++) V[size_t(i) * kQBlock + r] = v[i - r];
    }
    // T (forward, columnwise): T[r][r] = tau_r, T[0..r, r] = -tau_r T[0..r, 0..r] V^T v_r.
    for (int r = 0; r < kQBlock; r++)
      for (int c = 0; c < kQBlock; c++) T[r][c] = 0.0;
    for (int r = 0; r < nb; r++) {
      const double t = tau[k0 + r];
      T[r][r] = t;
      double z[kQBlock];
      for (int c = 0; c < r; c++) {
        double s = 0;
        for (int i = r; i < m; i++) s += V[size_t(i) * kQBlock + c] * V[size_t(i) * kQBlock + r];
        z[c] = s;
      }
      for (int c = 0; c < r; c++) {
        double s = 0;
        for (int u = c; u < r; u++) s += T[c][u] * z[u];
        T[c][r] = -t * s;
      }
    }
    double* qb = q + size_t(b) * ldq + b;
    vt_q(m, V.data(), qb, ldq, X.data());
    // Y = T X (T upper triangular).
    for (int r = 0; r < kQBlock; r++) {
      double* yr = Y.data() + size_t(r) * m;
      std::fill(yr, yr + m, 0.0);
      for (int c = r; c < nb; c++) {
        const double t = T[r][c];
        if (t == 0.0) continue;
        const double* xc = X.data() + size_t(c) * m;
        for (int j = 0; j < m; j++) yr[j] += t * xc[j];
      }
    }
    q_minus_vy(m, V.data(), Y.data(), qb, ldq);
  }
}

// Stage 3b: applies every recorded rotation to columns [k0, k0 + B) of W (rows of stride ld).
template <int B>
inline __attribute__((always_inline)) void replay_block(const std::vector<Sweep>& sweeps, const double* cs, double* W,
                                                        size_t ld, int k0) {
  for (const Sweep& sw : sweeps) {
    double h[B];
    const double* top = W + size_t(sw.m) * ld + k0;
    for (int u = 0; u < B; u++) h[u] = top[u];
    const double* r = cs + sw.off;
    for (int i = sw.m - 1; i >= sw.l; i--, r += 2) {
      const double c = r[0], s = r[1];
      const double* wi = W + size_t(i) * ld + k0;
      double* wi1 = W + size_t(i + 1) * ld + k0;
      for (int u = 0; u < B; u++) {
        // c*x is off the carried chain, so the chain through h is one fused multiply-add.
        const double x = wi[u], cx = c * x;
        wi1[u] = s * x + c * h[u];
        h[u] = cx - s * h[u];
      }
    }
    double* bottom = W + size_t(sw.l) * ld + k0;
    for (int u = 0; u < B; u++) bottom[u] = h[u];
  }
}

// W is stored panel by panel: panel p (columns [p*kBlock, (p+1)*kBlock) of every row) is n rows
// of kBlock doubles, contiguous, so a rotation sweep walks memory forward-only and a panel is one
// 512 KB stretch that L2 holds (rows of a power-of-two stride would collide in the cache sets).
template <int B>
inline __attribute__((always_inline)) void replay_all(const std::vector<Sweep>& sweeps, const double* cs, double* W,
                                                      int n, int panels) {
  for (int p = 0; p < panels; p++)
    for (int k0 = 0; k0 < kBlock; k0 += B) replay_block<B>(sweeps, cs, W + size_t(p) * n * kBlock, kBlock, k0);
}

struct Kernels {
  void (*tridiagonalize)(int, double*, double*, double*, double*);
  VtQFn vt_q;
  QmVYFn q_minus_vy;
  void (*replay)(const std::vector<Sweep>&, const double*, double*, int, int);
};

void tridiagonalize_generic(int n, double* a, double* d, double* e, double* tau) { tridiagonalize(n, a, d, e, tau); }
void vt_q_generic(int m, const double* V, const double* Q, size_t ldq, double* X) { vt_q_portable(m, V, Q, ldq, X); }
void q_minus_vy_generic(int m, const double* V, const double* Y, double* Q, size_t ldq) {
  q_minus_vy_portable(m, V, Y, Q, ldq);
}
void replay_generic(const std::vector<Sweep>& s, const double* cs, double* W, int n, int panels) {
  replay_all<8>(s, cs, W, n, panels);
}

#if defined(__x86_64__)
// Intrinsics so the carried rows stay in registers (the portable loop keeps them on the stack) and
// the carried chain is one fused multiply-add per rotation: R independent chains of 8 doubles.
template <int R>
__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"), always_inline)) inline void replay_block_avx512(
    const std::vector<Sweep>& sweeps, const double* cs, double* W, size_t ld, size_t k0) {
  for (const Sweep& sw : sweeps) {
    __m512d h[R];
    const double* top = W + size_t(sw.m) * ld + k0;
#pragma GCC unroll 16
    for (int u = 0; u < R; u++) h[u] = _mm512_loadu_pd(top + 8 * u);
    const double* r = cs + sw.off;
    double* wi1 = W + size_t(sw.m) * ld + k0;
    for (int i = sw.m - 1; i >= sw.l; i--, r += 2) {
      const __m512d c = _mm512_set1_pd(r[0]), s = _mm512_set1_pd(r[1]);
      const double* wi = wi1 - ld;
#pragma GCC unroll 16
      for (int u = 0; u < R; u++) {
        const __m512d x = _mm512_loadu_pd(wi + 8 * u);
        _mm512_storeu_pd(wi1 + 8 * u, _mm512_fmadd_pd(c, h[u], _mm512_mul_pd(s, x)));
        h[u] = _mm512_fnmadd_pd(s, h[u], _mm512_mul_pd(c, x));
      }
      wi1 -= ld;
    }
#pragma GCC unroll 16
    for (int u = 0; u < R; u++) _mm512_storeu_pd(wi1 + 8 * u, h[u]);
  }
}
template <int R>
__attribute__((target("avx2,fma"), always_inline)) inline void replay_block_avx2(const std::vector<Sweep>& sweeps,
                                                                                 const double* cs, double* W,
                                                                                 size_t ld, size_t k0) {
  for (const Sweep& sw : sweeps) {
    __m256d h[R];
    const double* top = W + size_t(sw.m) * ld + k0;
#pragma GCC unroll 16
    for (int u = 0; u < R; u++) h[u] = _mm256_loadu_pd(top + 4 * u);
    const double* r = cs + sw.off;
    double* wi1 = W + size_t(sw.m) * ld + k0;
    for (int i = sw.m - 1; i >= sw.l; i--, r += 2) {
      const __m256d c = _mm256_set1_pd(r[0]), s = _mm256_set1_pd(r[1]);
      const double* wi = wi1 - ld;
#pragma GCC unroll 16
      for (int u = 0; u < R; u++) {
        const __m256d x = _mm256_loadu_pd(wi + 4 * u);
        _mm256_storeu_pd(wi1 + 4 * u, _mm256_fmadd_pd(c, h[u], _mm256_mul_pd(s, x)));
        h[u] = _mm256_fnmadd_pd(s, h[u], _mm256_mul_pd(c, x));
      }
      wi1 -= ld;
    }
#pragma GCC unroll 16
    for (int u = 0; u < R; u++) _mm256_storeu_pd(wi1 + 4 * u, h[u]);
  }
}
__attribute__((target("avx2,fma"))) void tridiagonalize_avx2(int n, double* a, double* d, double* e, double* tau) {
  tridiagonalize(n, a, d, e, tau);
}
__attribute__((target("avx2,fma"))) void vt_q_avx2(int m, const double* V, const double* Q, size_t ldq, double* X) {
  vt_q_portable(m, V, Q, ldq, X);
}
__attribute__((target("avx2,fma"))) void q_minus_vy_avx2(int m, const double* V, const double* Y, double* Q,
                                                         size_t ldq) {
  q_minus_vy_portable(m, V, Y, Q, ldq);
}
__attribute__((target("avx2,fma"))) void replay_avx2(const std::vector<Sweep>& s, const double* cs, double* W, int n,
                                                     int panels) {
  for (int p = 0; p < panels; p++)
    for (int k0 = 0; k0 < kBlock; k0 += 4 * kR2) replay_block_avx2<kR2>(s, cs, W + size_t(p) * n * kBlock, kBlock, k0);
}
__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))) void tridiagonalize_avx512(int n, double* a, double* d,
                                                                                       double* e, double* tau) {
  tridiagonalize(n, a, d, e, tau);
}
// Column strips of 8: the kQBlock accumulators (or the kQBlock rows of Y) stay in registers while
// the strip of Q streams past; the ragged last strip is masked.
__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))) void vt_q_avx512(int m, const double* V,
                                                                              const double* Q, size_t ldq, double* X) {
  for (int j0 = 0; j0 < m; j0 += 8) {
    const __mmask8 mask = __mmask8(m - j0 >= 8 ? 0xff : (1u << (m - j0)) - 1);
    __m512d acc[kQBlock];
#pragma GCC unroll 16
    for (int r = 0; r < kQBlock; r++) acc[r] = _mm512_setzero_pd();
    for (int i = 0; i < m; i++) {
      const __m512d qv = _mm512_maskz_loadu_pd(mask, Q + size_t(i) * ldq + j0);
      const double* vi = V + size_t(i) * kQBlock;
#pragma GCC unroll 16
      for (int r = 0; r < kQBlock; r++) acc[r] = _mm512_fmadd_pd(_mm512_set1_pd(vi[r]), qv, acc[r]);
    }
#pragma GCC unroll 16
    for (int r = 0; r < kQBlock; r++) _mm512_mask_storeu_pd(X + size_t(r) * m + j0, mask, acc[r]);
  }
}
__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))) void q_minus_vy_avx512(int m, const double* V,
                                                                                    const double* Y, double* Q,
                                                                                    size_t ldq) {
  for (int j0 = 0; j0 < m; j0 += 8) {
    const __mmask8 mask = __mmask8(m - j0 >= 8 ? 0xff : (1u << (m - j0)) - 1);
    __m512d y[kQBlock];
#pragma GCC unroll 16
    for (int r = 0; r < kQBlock; r++) y[r] = _mm512_maskz_loadu_pd(mask, Y + size_t(r) * m + j0);
    for (int i = 0; i < m; i++) {
      double* qi = Q + size_t(i) * ldq + j0;
      const double* vi = V + size_t(i) * kQBlock;
      // Two partial sums halve the dependent chain per row.
      __m512d s0 = _mm512_mul_pd(_mm512_set1_pd(vi[0]), y[0]);
      __m512d s1 = _mm512_mul_pd(_mm512_set1_pd(vi[1]), y[1]);
#pragma GCC unroll 16
      for (int r = 2; r < kQBlock; r += 2) {
        s0 = _mm512_fmadd_pd(_mm512_set1_pd(vi[r]), y[r], s0);
        s1 = _mm512_fmadd_pd(_mm512_set1_pd(vi[r + 1]), y[r + 1], s1);
      }
      const __m512d qv = _mm512_maskz_loadu_pd(mask, qi);
      _mm512_mask_storeu_pd(qi, mask, _mm512_sub_pd(qv, _mm512_add_pd(s0, s1)));
    }
  }
}
__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))) void replay_avx512(const std::vector<Sweep>& s,
                                                                               const double* cs, double* W, int n,
                                                                               int panels) {
  for (int p = 0; p < panels; p++)
    for (int k0 = 0; k0 < kBlock; k0 += 8 * kR512)
      replay_block_avx512<kR512>(s, cs, W + size_t(p) * n * kBlock, kBlock, k0);
}
#endif

const Kernels& kernels_for(const char* path) {
  static const Kernels generic{tridiagonalize_generic, vt_q_generic, q_minus_vy_generic, replay_generic};
#if defined(__x86_64__)
  static const Kernels avx2{tridiagonalize_avx2, vt_q_avx2, q_minus_vy_avx2, replay_avx2};
  static const Kernels avx512{tridiagonalize_avx512, vt_q_avx512, q_minus_vy_avx512, replay_avx512};
  if (std::strcmp(path, "avx512") == 0) return avx512;
  if (std::strcmp(path, "avx2") == 0) return avx2;
#endif
  return generic;
}

// sqrt(x^2 + y^2) without the cost of std::hypot where squaring cannot overflow or underflow.
inline double fast_hypot(double x, double y) {
  const double ax = std::fabs(x), ay = std::fabs(y);
  const double big = std::max(ax, ay), small = std::min(ax, ay);
  if (big < 1e150 && (small > 1e-150 || small == 0.0)) return std::sqrt(x * x + y * y);
  return std::hypot(x, y);
}

// Stage 3a: implicit QL with Wilkinson shifts on (d, e) as in tql2, the rotations recorded.
void ql_record(int n, double* d, double* e, std::vector<Sweep>& sweeps, std::vector<double>& cs) {
  double f = 0.0, tst1 = 0.0;
  const double eps = std::ldexp(1.0, -52);
  for (int l = 0; l < n; l++) {
    tst1 = std::max(tst1, std::fabs(d[l]) + std::fabs(e[l]));
    int m = l;
    while (m < n) {
      if (std::fabs(e[m]) <= eps * tst1) break;
      m++;
    }
    if (m == n) m = n - 1;
    if (m > l) {
      int iter = 0;
      do {
        if (++iter > 200) fail("E_CALIBRATION", "eigensolver did not converge (covariance has NaN/Inf?)");
        double g = d[l];
        double p = (d[l + 1] - g) / (2.0 * e[l]);
        double r = fast_hypot(p, 1.0);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const double dl1 = d[l + 1];
        double h = g - d[l];
        for (int i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        double c = 1.0, c2 = 1.0, c3 = 1.0;
        const double el1 = e[l + 1];
        double s = 0.0, s2 = 0.0;
        sweeps.push_back({l, m, cs.size()});
        for (int i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = fast_hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          cs.push_back(c);
          cs.push_back(s);
        }
        p = -s * s2 * c3 * el1 * e[l] / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (std::fabs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0.0;
  }
}

// Descending order (stable, so equal eigenvalues keep the solver's order) and the sign rule.
// W: eigenvector j of d[j] is row j, stored as `panels` panels of n rows x kBlock columns
// (panels = 0: plain rows of n).
void sort_and_sign(int n, const std::vector<double>& d, const double* W, int panels, std::vector<double>& evals,
                   std::vector<double>& evecs) {
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return d[x] > d[y]; });
  evals.resize(n);
  evecs.resize(size_t(n) * n);
  for (int i = 0; i < n; i++) {
    const int src = order[i];
    evals[i] = d[src];
    double* v = &evecs[size_t(i) * n];
    if (panels == 0) {
      std::memcpy(v, W + size_t(src) * n, sizeof(double) * n);
    } else {
      for (int p = 0; p < panels; p++)
        std::memcpy(v + size_t(p) * kBlock, W + (size_t(p) * n + src) * kBlock,
                    sizeof(double) * std::min(kBlock, n - p * kBlock));
    }
    int arg = 0;
    for (int k = 1; k < n; k++)
      if (std::fabs(v[k]) > std::fabs(v[arg])) arg = k;
    if (v[arg] < 0)
      for (int k = 0; k < n; k++) v[k] = -v[k];
  }
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
  std::vector<double> d(n), e(n), tau(n, 0.0);
  kr.tridiagonalize(n, a.data(), d.data(), e.data(), tau.data());
  for (double v : d)
    if (!std::isfinite(v)) fail("E_CALIBRATION", "eigensolver overflowed (covariance entries too large)");
  for (double v : e)
    if (!std::isfinite(v)) fail("E_CALIBRATION", "eigensolver overflowed (covariance entries too large)");
  std::vector<Sweep> sweeps;
  std::vector<double> cs;
  cs.reserve(2 * size_t(n) * n);  // about 0.85 n^2 rotations of two doubles at calibration shapes
  ql_record(n, d.data(), e.data(), sweeps, cs);
  // A row stride off the power of two keeps q's column strips from colliding in the cache sets.
  const size_t ldq = size_t(n) + 8;
  std::vector<double> q(ldq * n);
  accumulate_q(n, a.data(), tau.data(), q.data(), ldq, kr.vt_q, kr.q_minus_vy);
  // W = Q^T, panel by panel (see replay_all); the padding columns are zero and stay zero.
  const int panels = (n + kBlock - 1) / kBlock;
  std::vector<double> W(size_t(panels) * n * kBlock, 0.0);
  // Written in order; the reads walk kBlock rows of q at a time, which stay in L1.
  for (int p = 0; p < panels; p++) {
    const int w = std::min(kBlock, n - p * kBlock);
    const double* qp = q.data() + size_t(p) * kBlock * ldq;
    for (int c = 0; c < n; c++) {
      double* dst = W.data() + (size_t(p) * n + c) * kBlock;
      for (int u = 0; u < w; u++) dst[u] = qp[size_t(u) * ldq + c];
    }
  }
  q.clear();
  q.shrink_to_fit();
  kr.replay(sweeps, cs.data(), W.data(), n, panels);
  sort_and_sign(n, d, W.data(), panels, evals, evecs);
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
  sort_and_sign(n, d, W.data(), 0, evals, evecs);
}

}  // namespace kvtc
