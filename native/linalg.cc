#include "linalg.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "errors.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#ifdef KVTC_HAVE_OPENBLAS
#include <cblas.h>
#include <lapacke.h>
#endif

namespace kvtc {
namespace {

// Register-blocked micro-kernel: an MR x NR tile of C from an MR-row slice of A and a packed
// k x NR panel of B. The compiler keeps the tile in vector registers and vectorizes over NR.
template <typename T, int MR, int NR>
inline __attribute__((always_inline)) void micro_tile(int k, const T* A, int lda, const T* Bp, T* C, int ldc,
                                                      int mr, int nr, bool accumulate) {
  T c[MR][NR];
  for (int r = 0; r < MR; r++)
    for (int j = 0; j < NR; j++) c[r][j] = T(0);
  for (int p = 0; p < k; p++) {
    const T* b = Bp + size_t(p) * NR;
    for (int r = 0; r < MR; r++) {
      const T a = A[size_t(r) * lda + p];
      for (int j = 0; j < NR; j++) c[r][j] += a * b[j];
    }
  }
  for (int r = 0; r < mr; r++) {
    T* crow = C + size_t(r) * ldc;
    if (accumulate)
      for (int j = 0; j < nr; j++) crow[j] += c[r][j];
    else
      for (int j = 0; j < nr; j++) crow[j] = c[r][j];
  }
}

// Packs B into NR-wide panels and walks C in MR x NR tiles computed by `tile` (the portable
// micro_tile, or an intrinsics kernel), so every kernel shares the blocking and edge handling.
template <typename T, int MR, int NR, typename Tile>
inline __attribute__((always_inline)) void gemm_blocked(int m, int n, int k, const T* A, int lda, const T* B,
                                                        int ldb, T* C, int ldc, bool accumulate, Tile tile) {
  // Panels of B are packed contiguously (and zero-padded to NR) so the inner loop streams them.
  std::vector<T> panel(size_t(k) * NR);
  std::vector<T> aedge(static_cast<size_t>(MR) * k);
  for (int j0 = 0; j0 < n; j0 += NR) {
    const int nr = std::min(NR, n - j0);
    for (int p = 0; p < k; p++) {
      const T* src = B + size_t(p) * ldb + j0;
      T* dst = panel.data() + size_t(p) * NR;
      int j = 0;
      for (; j < nr; j++) dst[j] = src[j];
      for (; j < NR; j++) dst[j] = T(0);
    }
    for (int i0 = 0; i0 < m; i0 += MR) {
      const int mr = std::min(MR, m - i0);
      const T* a = A + size_t(i0) * lda;
      int la = lda;
      if (mr < MR) {  // copy the ragged last rows so the kernel never reads past A
        std::fill(aedge.begin(), aedge.end(), T(0));
        for (int r = 0; r < mr; r++) std::memcpy(aedge.data() + size_t(r) * k, a + size_t(r) * lda, sizeof(T) * k);
        a = aedge.data();
        la = k;
      }
      tile(k, a, la, panel.data(), C + size_t(i0) * ldc + j0, ldc, mr, nr, accumulate);
    }
  }
}

// The portable kernel, passed as an inlined lambda so it is compiled for the caller's target.
template <typename T, int MR, int NR>
inline __attribute__((always_inline)) void gemm_portable(int m, int n, int k, const T* A, int lda, const T* B, int ldb,
                                                         T* C, int ldc, bool acc) {
  gemm_blocked<T, MR, NR>(m, n, k, A, lda, B, ldb, C, ldc, acc,
                          [](int kk, const T* a, int la, const T* bp, T* c, int lc, int mr, int nr, bool ac)
                              __attribute__((always_inline)) { micro_tile<T, MR, NR>(kk, a, la, bp, c, lc, mr, nr, ac); });
}

#if defined(__x86_64__)
// 6 x 16 tile in 12 ymm accumulators: per step 2 loads of the B panel, 6 broadcasts, 12 FMAs.
__attribute__((target("avx2,fma"))) void tile_f32_avx2(int k, const float* A, int lda, const float* Bp, float* C,
                                                      int ldc, int mr, int nr, bool accumulate) {
  __m256 c[6][2];
  for (int r = 0; r < 6; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
  const float* a0 = A;
  for (int p = 0; p < k; p++) {
    const __m256 b0 = _mm256_loadu_ps(Bp + size_t(p) * 16);
    const __m256 b1 = _mm256_loadu_ps(Bp + size_t(p) * 16 + 8);
    for (int r = 0; r < 6; r++) {
      const __m256 a = _mm256_broadcast_ss(a0 + size_t(r) * lda + p);
      c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
      c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
    }
  }
  alignas(32) float tmp[16];
  for (int r = 0; r < mr; r++) {
    float* crow = C + size_t(r) * ldc;
    if (nr == 16 && !accumulate) {
      _mm256_storeu_ps(crow, c[r][0]);
      _mm256_storeu_ps(crow + 8, c[r][1]);
      continue;
    }
    _mm256_store_ps(tmp, c[r][0]);
    _mm256_store_ps(tmp + 8, c[r][1]);
    if (accumulate)
      for (int j = 0; j < nr; j++) crow[j] += tmp[j];
    else
      for (int j = 0; j < nr; j++) crow[j] = tmp[j];
  }
}

[[maybe_unused]] __attribute__((target("avx2,fma"))) void gemm_f32_avx2(int m, int n, int k, const float* A, int lda, const float* B,
                                                      int ldb, float* C, int ldc, bool acc) {
  gemm_blocked<float, 6, 16>(m, n, k, A, lda, B, ldb, C, ldc, acc, tile_f32_avx2);
}

[[maybe_unused]] __attribute__((target("avx2,fma"))) void gemm_f64_avx2(int m, int n, int k, const double* A, int lda,
                                                      const double* B, int ldb, double* C, int ldc, bool acc) {
  gemm_portable<double, 4, 8>(m, n, k, A, lda, B, ldb, C, ldc, acc);
}
[[maybe_unused]] bool has_avx2() {
  static const bool v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return v;
}
#else
bool has_avx2() { return false; }
#endif

}  // namespace

void gemm_f32(int m, int n, int k, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
              bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int i = 0; i < m; i++) std::fill(C + size_t(i) * ldc, C + size_t(i) * ldc + n, 0.0f);
    return;
  }
#ifdef KVTC_HAVE_OPENBLAS
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, A, lda, B, ldb, accumulate ? 1.0f : 0.0f, C,
              ldc);
#else
#if defined(__x86_64__)
  if (has_avx2()) return gemm_f32_avx2(m, n, k, A, lda, B, ldb, C, ldc, accumulate);
#endif
  gemm_portable<float, 4, 16>(m, n, k, A, lda, B, ldb, C, ldc, accumulate);
#endif
}

void gemm_f64(int m, int n, int k, const double* A, int lda, const double* B, int ldb, double* C, int ldc,
              bool accumulate) {
  if (m <= 0 || n <= 0 || k <= 0) return;
#ifdef KVTC_HAVE_OPENBLAS
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0, A, lda, B, ldb, accumulate ? 1.0 : 0.0, C, ldc);
#else
#if defined(__x86_64__)
  if (has_avx2()) return gemm_f64_avx2(m, n, k, A, lda, B, ldb, C, ldc, accumulate);
#endif
  gemm_portable<double, 4, 8>(m, n, k, A, lda, B, ldb, C, ldc, accumulate);
#endif
}

const char* linalg_path() {
#ifdef KVTC_HAVE_OPENBLAS
  return "openblas";
#else
  return has_avx2() ? "avx2" : "generic";
#endif
}

namespace {

// Householder reduction to tridiagonal form followed by the implicit QL algorithm (the classic
// EISPACK tred2/tql2 pair). Eigenvectors are kept transposed (W[j][r] = V[r][j]) so that the QL
// rotations, the O(n^3) part, sweep contiguous memory.
[[maybe_unused]] void tred2_tql2(int n, std::vector<double>& a, std::vector<double>& d, std::vector<double>& W) {
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

}  // namespace

void sym_eig_desc(int n, std::vector<double>& a, std::vector<double>& evals, std::vector<double>& evecs) {
  for (double v : a)
    if (!std::isfinite(v)) fail("E_CALIBRATION", "covariance holds NaN or Inf; calibration samples must be finite");
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
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return d[x] > d[y]; });
  evals.resize(n);
  evecs.resize(size_t(n) * n);
  for (int i = 0; i < n; i++) {
    const int src = order[i];
    evals[i] = d[src];
    const double* v = &W[size_t(src) * n];
    int arg = 0;
    for (int k = 1; k < n; k++)
      if (std::fabs(v[k]) > std::fabs(v[arg])) arg = k;
    const double sgn = v[arg] < 0 ? -1.0 : 1.0;
    for (int k = 0; k < n; k++) evecs[size_t(i) * n + k] = sgn * v[k];
  }
}

}  // namespace kvtc
