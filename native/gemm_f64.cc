#include "gemm_f64.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvtc {

#if defined(__x86_64__)
namespace {

// An empty product: nothing to do (m or n is 0), or C = 0 unless accumulating (k is 0). True
// when the call is done.
bool degenerate(int m, int n, int k, double* C, int ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return true;
  if (k > 0) return false;
  if (!accumulate)
    for (int i = 0; i < m; i++) std::fill(C + size_t(i) * ldc, C + size_t(i) * ldc + n, 0.0);
  return true;
}

// Register tile: kMR rows x 32 columns of C (24 zmm accumulators); per step of k, 4 loads of the
// packed B row and kMR broadcasts of A feed 24 fused multiply-adds, so the FMA units, not the
// loads, set the pace. A is read in place.
constexpr int kMR = 6, kNR = 32, kKC = 256;

template <int MR>
__attribute__((target("avx512f"), always_inline)) inline void tile(int kc, const double* A, int lda,
                                                                  const double* Bp, double* C, int ldc,
                                                                  __mmask8 m0, __mmask8 m1, __mmask8 m2, __mmask8 m3,
                                                                  bool accumulate) {
  __m512d c[MR][4];
#pragma GCC unroll 6
  for (int r = 0; r < MR; r++)
    for (int u = 0; u < 4; u++) c[r][u] = _mm512_setzero_pd();
  for (int p = 0; p < kc; p++) {
    const double* b = Bp + size_t(p) * kNR;
    const __m512d b0 = _mm512_load_pd(b), b1 = _mm512_load_pd(b + 8), b2 = _mm512_load_pd(b + 16),
                  b3 = _mm512_load_pd(b + 24);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
      const __m512d a = _mm512_set1_pd(A[size_t(r) * lda + p]);
      c[r][0] = _mm512_fmadd_pd(a, b0, c[r][0]);
      c[r][1] = _mm512_fmadd_pd(a, b1, c[r][1]);
      c[r][2] = _mm512_fmadd_pd(a, b2, c[r][2]);
      c[r][3] = _mm512_fmadd_pd(a, b3, c[r][3]);
    }
  }
  const __mmask8 mk[4] = {m0, m1, m2, m3};
#pragma GCC unroll 6
  for (int r = 0; r < MR; r++) {
    double* cr = C + size_t(r) * ldc;
    for (int u = 0; u < 4; u++) {
      if (!mk[u]) continue;
      __m512d v = c[r][u];
      if (accumulate) v = _mm512_add_pd(v, _mm512_maskz_loadu_pd(mk[u], cr + 8 * u));
      _mm512_mask_storeu_pd(cr + 8 * u, mk[u], v);
    }
  }
}

}  // namespace

__attribute__((target("avx512f"))) void gemm_f64_avx512(int m, int n, int k, const double* A, int lda,
                                                        const double* B, int ldb, double* C, int ldc,
                                                        bool accumulate) {
  if (degenerate(m, n, k, C, ldc, accumulate)) return;
  // B is packed kc x nc at a time, nc chosen so the block (~192 KB) stays in L2 while every strip
  // of kMR rows of A passes over all its panels (the strip itself stays in L1).
  const int kc_max = std::min(k, kKC);
  const int nc = std::max(kNR, (192 * 1024 / (8 * kc_max)) / kNR * kNR);
  std::vector<double> store(size_t(kc_max) * nc + 8);
  // 64-byte aligned for the aligned loads.
  double* packed = reinterpret_cast<double*>((reinterpret_cast<uintptr_t>(store.data()) + 63) & ~uintptr_t(63));
  for (int jc = 0; jc < n; jc += nc) {
    const int ncols = std::min(nc, n - jc);
    const int panels = (ncols + kNR - 1) / kNR;
    for (int p0 = 0; p0 < k; p0 += kKC) {
      const int kc = std::min(kKC, k - p0);
      for (int q = 0; q < panels; q++) {
        const int j0 = jc + q * kNR, nr = std::min(kNR, n - j0);
        double* panel = packed + size_t(q) * kc * kNR;
        for (int p = 0; p < kc; p++) {
          const double* b = B + size_t(p0 + p) * ldb + j0;
          double* dst = panel + size_t(p) * kNR;
          for (int u = 0; u < 4; u++) {
            const int w = std::max(0, std::min(8, nr - 8 * u));
            _mm512_store_pd(dst + 8 * u, _mm512_maskz_loadu_pd(__mmask8((1u << w) - 1), b + 8 * u));
          }
        }
      }
      const bool acc = accumulate || p0 > 0;
      for (int i0 = 0; i0 < m; i0 += kMR) {
        const int mr = std::min(kMR, m - i0);
        const double* a = A + size_t(i0) * lda + p0;
        for (int q = 0; q < panels; q++) {
          const int j0 = jc + q * kNR, nr = std::min(kNR, n - j0);
          __mmask8 mk[4];
          for (int u = 0; u < 4; u++) {
            const int w = std::max(0, std::min(8, nr - 8 * u));
            mk[u] = __mmask8((1u << w) - 1);
          }
          const double* panel = packed + size_t(q) * kc * kNR;
          double* c = C + size_t(i0) * ldc + j0;
          switch (mr) {
            case 6: tile<6>(kc, a, lda, panel, c, ldc, mk[0], mk[1], mk[2], mk[3], acc); break;
            case 5: tile<5>(kc, a, lda, panel, c, ldc, mk[0], mk[1], mk[2], mk[3], acc); break;
            case 4: tile<4>(kc, a, lda, panel, c, ldc, mk[0], mk[1], mk[2], mk[3], acc); break;
            case 3: tile<3>(kc, a, lda, panel, c, ldc, mk[0], mk[1], mk[2], mk[3], acc); break;
            case 2: tile<2>(kc, a, lda, panel, c, ldc, mk[0], mk[1], mk[2], mk[3], acc); break;
            default: tile<1>(kc, a, lda, panel, c, ldc, mk[0], mk[1], mk[2], mk[3], acc); break;
          }
        }
      }
    }
  }
}
namespace {

// The AVX2 tile: kMR2 rows x 8 columns (12 ymm accumulators); per step of k, 2 loads of the
// packed B row and kMR2 broadcasts of A feed 12 fused multiply-adds.
constexpr int kMR2 = 6, kNR2 = 8;

template <int MR>
__attribute__((target("avx2,fma"), always_inline)) inline void tile2(int kc, const double* A, int lda, const double* Bp,
                                                                    double* C, int ldc, __m256i m0, __m256i m1,
                                                                    bool accumulate) {
  __m256d c[MR][2];
#pragma GCC unroll 6
  for (int r = 0; r < MR; r++)
    for (int u = 0; u < 2; u++) c[r][u] = _mm256_setzero_pd();
  for (int p = 0; p < kc; p++) {
    const double* b = Bp + size_t(p) * kNR2;
    const __m256d b0 = _mm256_load_pd(b), b1 = _mm256_load_pd(b + 4);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
      const __m256d a = _mm256_broadcast_sd(A + size_t(r) * lda + p);
      c[r][0] = _mm256_fmadd_pd(a, b0, c[r][0]);
      c[r][1] = _mm256_fmadd_pd(a, b1, c[r][1]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; r++) {
    double* cr = C + size_t(r) * ldc;
    __m256d v0 = c[r][0], v1 = c[r][1];
    if (accumulate) {
      v0 = _mm256_add_pd(v0, _mm256_maskload_pd(cr, m0));
      v1 = _mm256_add_pd(v1, _mm256_maskload_pd(cr + 4, m1));
    }
    _mm256_maskstore_pd(cr, m0, v0);
    _mm256_maskstore_pd(cr + 4, m1, v1);
  }
}

}  // namespace

__attribute__((target("avx2,fma"))) void gemm_f64_avx2(int m, int n, int k, const double* A, int lda, const double* B,
                                                       int ldb, double* C, int ldc, bool accumulate) {
  if (degenerate(m, n, k, C, ldc, accumulate)) return;
  // Blocking as in gemm_f64_avx512.
  const int kc_max = std::min(k, kKC);
  const int nc = std::max(kNR2, (192 * 1024 / (8 * kc_max)) / kNR2 * kNR2);
  std::vector<double> store(size_t(kc_max) * nc + 4);
  double* packed = reinterpret_cast<double*>((reinterpret_cast<uintptr_t>(store.data()) + 31) & ~uintptr_t(31));
  for (int jc = 0; jc < n; jc += nc) {
    const int ncols = std::min(nc, n - jc);
    const int panels = (ncols + kNR2 - 1) / kNR2;
    for (int p0 = 0; p0 < k; p0 += kKC) {
      const int kc = std::min(kKC, k - p0);
      for (int q = 0; q < panels; q++) {
        const int j0 = jc + q * kNR2, nr = std::min(kNR2, n - j0);
        double* panel = packed + size_t(q) * kc * kNR2;
        for (int p = 0; p < kc; p++) {
          const double* b = B + size_t(p0 + p) * ldb + j0;
          double* dst = panel + size_t(p) * kNR2;
          for (int j = 0; j < kNR2; j++) dst[j] = j < nr ? b[j] : 0.0;
        }
      }
      const bool acc = accumulate || p0 > 0;
      for (int i0 = 0; i0 < m; i0 += kMR2) {
        const int mr = std::min(kMR2, m - i0);
        const double* a = A + size_t(i0) * lda + p0;
        for (int q = 0; q < panels; q++) {
          const int j0 = jc + q * kNR2, nr = std::min(kNR2, n - j0);
          const double* panel = packed + size_t(q) * kc * kNR2;
          double* c = C + size_t(i0) * ldc + j0;
          // Lane j of the masks is on (sign bit set) for the columns that exist.
          const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
          const __m256i m0 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(nr), lane);
          const __m256i m1 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(nr - 4), lane);
          switch (mr) {
            case 6: tile2<6>(kc, a, lda, panel, c, ldc, m0, m1, acc); break;
            case 5: tile2<5>(kc, a, lda, panel, c, ldc, m0, m1, acc); break;
            case 4: tile2<4>(kc, a, lda, panel, c, ldc, m0, m1, acc); break;
            case 3: tile2<3>(kc, a, lda, panel, c, ldc, m0, m1, acc); break;
            case 2: tile2<2>(kc, a, lda, panel, c, ldc, m0, m1, acc); break;
            default: tile2<1>(kc, a, lda, panel, c, ldc, m0, m1, acc); break;
          }
        }
      }
    }
  }
}
#else
void gemm_f64_avx512(int, int, int, const double*, int, const double*, int, double*, int, bool) {}
void gemm_f64_avx2(int, int, int, const double*, int, const double*, int, double*, int, bool) {}
#endif

}  // namespace kvtc
