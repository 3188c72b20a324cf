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

}  // namespace kvtc
