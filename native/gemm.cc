#include "gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "errors.h"
#include "linalg.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#ifdef KVTC_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace kvtc {
namespace {

std::shared_ptr<float> aligned_floats(size_t count) {
  const size_t bytes = std::max<size_t>(64, (count * sizeof(float) + 63) / 64 * 64);
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) fail("E_CAPACITY", "cannot allocate " + std::to_string(bytes) + " bytes for a packed matrix");
  std::memset(p, 0, bytes);
  return std::shared_ptr<float>(p, std::free);
}

// ---- scalar: plain C++, vectorized by the compiler for the baseline target -------------------

// MR rows x one 16-column panel in 4-float vectors of the compiler's vector extension (SSE on
// baseline x86-64, NEON on Arm): two rows keep 8 accumulators and the panel row in 16 registers.
typedef float v4f __attribute__((vector_size(16)));

inline v4f load4(const float* p) {
  v4f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <int MR>
void tile_scalar(int K, const float* A, size_t lda, const float* B, float* C, size_t ldc, const float* bias, int cols,
                  bool acc) {
  v4f c[MR][4];
#pragma GCC unroll 4
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++) c[r][v] = v4f{0, 0, 0, 0};
  for (int p = 0; p < K; p++) {
    const float* b = B + size_t(p) * kPanel;
    const v4f b0 = load4(b), b1 = load4(b + 4), b2 = load4(b + 8), b3 = load4(b + 12);
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
      const float a = A[size_t(r) * lda + p];
      c[r][0] += a * b0;
      c[r][1] += a * b1;
      c[r][2] += a * b2;
      c[r][3] += a * b3;
    }
  }
  float t[MR][kPanel];
#pragma GCC unroll 4
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++) std::memcpy(&t[r][4 * v], &c[r][v], sizeof(v4f));
  for (int r = 0; r < MR; r++) {
    float* crow = C + size_t(r) * ldc;
    for (int j = 0; j < cols; j++) {
      float v = t[r][j];
      if (bias) v += bias[j];
      crow[j] = acc ? crow[j] + v : v;
    }
  }
}

void gemm_scalar(int m, const float* A, int lda, const PackedB& B, float* C, int ldc, const float* bias, bool acc) {
  for (int j = 0; j < B.panels(); j++) {
    const int cols = std::min(kPanel, B.n - j * kPanel);
    const float* bj = bias ? bias + j * kPanel : nullptr;
    int i = 0;
    for (; i + 2 <= m; i += 2)
      tile_scalar<2>(B.k, A + size_t(i) * lda, lda, B.panel(j), C + size_t(i) * ldc + j * kPanel, ldc, bj, cols, acc);
    if (i < m) tile_scalar<1>(B.k, A + size_t(i) * lda, lda, B.panel(j), C + size_t(i) * ldc + j * kPanel, ldc, bj, cols, acc);
  }
}

#if defined(__x86_64__)
// ---- AVX2 + FMA: 6 rows x 16 columns in 12 ymm accumulators ----------------------------------

template <int MR>
__attribute__((target("avx2,fma"))) void tile_avx2(int K, const float* A, size_t lda, const float* B, float* C,
                                                  size_t ldc, const float* bias, int cols, bool acc) {
  __m256 c[MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
  for (int p = 0; p < K; p++) {
    const __m256 b0 = _mm256_load_ps(B + size_t(p) * kPanel);
    const __m256 b1 = _mm256_load_ps(B + size_t(p) * kPanel + 8);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      const __m256 a = _mm256_broadcast_ss(A + size_t(r) * lda + p);
      c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
      c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++) {
    if (bias) {
      c[r][0] = _mm256_add_ps(c[r][0], _mm256_loadu_ps(bias));  // 16 values: the caller pads the edge
      c[r][1] = _mm256_add_ps(c[r][1], _mm256_loadu_ps(bias + 8));
    }
    float* crow = C + size_t(r) * ldc;
    if (cols == kPanel) {
      if (acc) {
        c[r][0] = _mm256_add_ps(_mm256_loadu_ps(crow), c[r][0]);
        c[r][1] = _mm256_add_ps(_mm256_loadu_ps(crow + 8), c[r][1]);
      }
      _mm256_storeu_ps(crow, c[r][0]);
      _mm256_storeu_ps(crow + 8, c[r][1]);
    } else {
      alignas(32) float t[kPanel];
      _mm256_store_ps(t, c[r][0]);
      _mm256_store_ps(t + 8, c[r][1]);
      for (int j = 0; j < cols; j++) crow[j] = acc ? crow[j] + t[j] : t[j];
    }
  }
}

using TileAvx2 = void (*)(int, const float*, size_t, const float*, float*, size_t, const float*, int, bool);
constexpr TileAvx2 kTilesAvx2[6] = {tile_avx2<1>, tile_avx2<2>, tile_avx2<3>, tile_avx2<4>, tile_avx2<5>, tile_avx2<6>};

void gemm_avx2(int m, const float* A, int lda, const PackedB& B, float* C, int ldc, const float* bias, bool acc) {
  alignas(32) float bias_edge[kPanel];
  for (int j = 0; j < B.panels(); j++) {
    const int cols = std::min(kPanel, B.n - j * kPanel);
    const float* bj = bias ? bias + j * kPanel : nullptr;
    if (bj && cols < kPanel) {  // the kernel reads 16 bias values; never past the caller's array
      std::fill(bias_edge, bias_edge + kPanel, 0.0f);
      std::copy(bj, bj + cols, bias_edge);
      bj = bias_edge;
    }
    for (int i = 0; i < m; i += 6) {
      const int mr = std::min(6, m - i);
      kTilesAvx2[mr - 1](B.k, A + size_t(i) * lda, lda, B.panel(j), C + size_t(i) * ldc + j * kPanel, ldc, bj, cols, acc);
    }
  }
}

// ---- AVX-512: 8 rows x up to 48 columns (three panels) in 24 zmm accumulators -----------------
// 64-token batches are whole 8-row tiles, and 48 columns cover k = 224/320 and p = 1024 with
// little padding; each step is NV panel loads, 8 broadcasts and 8*NV FMAs.

template <int MR, int NV>
__attribute__((target("avx512f"))) void tile_avx512(int K, const float* A, size_t lda, const float* B, size_t pstride,
                                                    float* C, size_t ldc, const float* bias, __mmask16 last, bool acc) {
  __m512 c[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) c[r][v] = _mm512_setzero_ps();
  for (int p = 0; p < K; p++) {
    __m512 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) b[v] = _mm512_load_ps(B + v * pstride + size_t(p) * kPanel);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      const __m512 a = _mm512_set1_ps(A[size_t(r) * lda + p]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) c[r][v] = _mm512_fmadd_ps(a, b[v], c[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++) {
    float* crow = C + size_t(r) * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
      const __mmask16 mk = v == NV - 1 ? last : __mmask16(0xffff);
      __m512 x = c[r][v];
      if (bias) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mk, bias + v * kPanel));
      if (acc) x = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, crow + v * kPanel), x);
      _mm512_mask_storeu_ps(crow + v * kPanel, mk, x);
    }
  }
}

using TileAvx512 = void (*)(int, const float*, size_t, const float*, size_t, float*, size_t, const float*, __mmask16,
                            bool);
#define KVTC_T512(mr) {tile_avx512<mr, 1>, tile_avx512<mr, 2>, tile_avx512<mr, 3>}
constexpr TileAvx512 kTilesAvx512[8][3] = {KVTC_T512(1), KVTC_T512(2), KVTC_T512(3), KVTC_T512(4),
                                           KVTC_T512(5), KVTC_T512(6), KVTC_T512(7), KVTC_T512(8)};
#undef KVTC_T512

void gemm_avx512(int m, const float* A, int lda, const PackedB& B, float* C, int ldc, const float* bias, bool acc) {
  const int np = B.panels();
  const size_t ps = size_t(B.k) * kPanel;
  for (int j = 0; j < np; j += 3) {
    const int nv = std::min(3, np - j);
    const int last_cols = std::min(nv * kPanel, B.n - j * kPanel) - (nv - 1) * kPanel;  // 1..16
    const __mmask16 last = __mmask16((1u << last_cols) - 1);
    const float* bj = bias ? bias + j * kPanel : nullptr;
    for (int i = 0; i < m; i += 8) {
      const int mr = std::min(8, m - i);
      kTilesAvx512[mr - 1][nv - 1](B.k, A + size_t(i) * lda, lda, B.panel(j), ps, C + size_t(i) * ldc + j * kPanel,
                                   ldc, bj, last, acc);
    }
  }
}

// Register-only FMA chains, enough of them to cover the FMA latency on every current core.
__attribute__((target("avx512f"))) double peak_avx512(int64_t it) {
  __m512 c[12];
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) c[i] = _mm512_set1_ps(float(i));
  for (int64_t s = 0; s < it; s++)
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) c[i] = _mm512_fmadd_ps(c[i], a, b);
  __m512 t = c[0];
  for (int i = 1; i < 12; i++) t = _mm512_add_ps(t, c[i]);
  alignas(64) float o[16];
  _mm512_store_ps(o, t);  // (not _mm512_reduce_add_ps: GCC 12 warns inside it)
  volatile float sink = o[0];
  (void)sink;
  return double(it) * 12 * 16 * 2;
}

__attribute__((target("avx2,fma"))) double peak_avx2(int64_t it) {
  __m256 c[12];
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) c[i] = _mm256_set1_ps(float(i));
  for (int64_t s = 0; s < it; s++)
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) c[i] = _mm256_fmadd_ps(c[i], a, b);
  __m256 t = c[0];
  for (int i = 1; i < 12; i++) t = _mm256_add_ps(t, c[i]);
  alignas(32) float o[8];
  _mm256_store_ps(o, t);
  volatile float sink = o[0];
  (void)sink;
  return double(it) * 12 * 8 * 2;
}
#endif

double peak_scalar(int64_t it) {
  float c[32];
  for (int i = 0; i < 32; i++) c[i] = float(i);
  for (int64_t s = 0; s < it; s++)
    for (int i = 0; i < 32; i++) c[i] = c[i] * 0.999999f + 1e-7f;
  float t = 0;
  for (int i = 0; i < 32; i++) t += c[i];
  volatile float sink = t;
  (void)sink;
  return double(it) * 32 * 2;
}

// ---- double precision (covariance accumulation): a portable register-blocked kernel ------------

template <int MR, int NR>
inline __attribute__((always_inline)) void tile_f64(int k, const double* A, int lda, const double* Bp, double* C,
                                                    int ldc, int mr, int nr, bool accumulate) {
  double c[MR][NR] = {};
  for (int p = 0; p < k; p++) {
    const double* b = Bp + size_t(p) * NR;
    for (int r = 0; r < MR; r++) {
      const double a = A[size_t(r) * lda + p];
      for (int j = 0; j < NR; j++) c[r][j] += a * b[j];
    }
  }
  for (int r = 0; r < mr; r++) {
    double* crow = C + size_t(r) * ldc;
    for (int j = 0; j < nr; j++) crow[j] = accumulate ? crow[j] + c[r][j] : c[r][j];
  }
}

template <int MR, int NR>
inline __attribute__((always_inline)) void gemm_f64_blocked(int m, int n, int k, const double* A, int lda,
                                                            const double* B, int ldb, double* C, int ldc, bool acc) {
  std::vector<double> panel(size_t(k) * NR), aedge(static_cast<size_t>(MR) * k);
  for (int j0 = 0; j0 < n; j0 += NR) {
    const int nr = std::min(NR, n - j0);
    for (int p = 0; p < k; p++)
      for (int j = 0; j < NR; j++) panel[size_t(p) * NR + j] = j < nr ? B[size_t(p) * ldb + j0 + j] : 0.0;
    for (int i0 = 0; i0 < m; i0 += MR) {
      const int mr = std::min(MR, m - i0);
      const double* a = A + size_t(i0) * lda;
      int la = lda;
      if (mr < MR) {  // the ragged last rows, copied so the kernel never reads past A
        std::fill(aedge.begin(), aedge.end(), 0.0);
        for (int r = 0; r < mr; r++) std::memcpy(aedge.data() + size_t(r) * k, a + size_t(r) * lda, sizeof(double) * k);
        a = aedge.data();
        la = k;
      }
      tile_f64<MR, NR>(k, a, la, panel.data(), C + size_t(i0) * ldc + j0, ldc, mr, nr, acc);
    }
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void gemm_f64_avx2(int m, int n, int k, const double* A, int lda, const double* B,
                                                       int ldb, double* C, int ldc, bool acc) {
  gemm_f64_blocked<4, 8>(m, n, k, A, lda, B, ldb, C, ldc, acc);
}
#endif

}  // namespace

SimdPath gemm_path() {
  if (const char* e = simd_env_error()) fail("E_OPTIONS", e);
  return simd_best();
}

PackedB pack_b(int k, int n, const float* B, int ldb) {
  PackedB pb;
  pb.k = std::max(k, 0);
  pb.n = std::max(n, 0);
  std::shared_ptr<float> d = aligned_floats(size_t(pb.panels()) * pb.k * kPanel);
  for (int j = 0; j < pb.panels(); j++) {
    float* dst = d.get() + size_t(j) * pb.k * kPanel;
    const int cols = std::min(kPanel, n - j * kPanel);
    for (int p = 0; p < k; p++) std::memcpy(dst + size_t(p) * kPanel, B + size_t(p) * ldb + j * kPanel, sizeof(float) * cols);
  }
  pb.data = std::move(d);
  return pb;
}

PackedB pack_bt(int k, int n, const float* Bt, int ldbt) {
  PackedB pb;
  pb.k = std::max(k, 0);
  pb.n = std::max(n, 0);
  std::shared_ptr<float> d = aligned_floats(size_t(pb.panels()) * pb.k * kPanel);
  for (int c = 0; c < n; c++) {  // column c of B is row c of Bt
    float* dst = d.get() + size_t(c / kPanel) * pb.k * kPanel + c % kPanel;
    const float* src = Bt + size_t(c) * ldbt;
    for (int p = 0; p < k; p++) dst[size_t(p) * kPanel] = src[p];
  }
  pb.data = std::move(d);
  return pb;
}

void gemm_packed(SimdPath path, int m, const float* A, int lda, const PackedB& B, float* C, int ldc, const float* bias,
                 bool accumulate) {
  if (m <= 0 || B.n <= 0) return;
#if defined(__x86_64__)
  if (path == SimdPath::Avx512) return gemm_avx512(m, A, lda, B, C, ldc, bias, accumulate);
  if (path == SimdPath::Avx2) return gemm_avx2(m, A, lda, B, C, ldc, bias, accumulate);
#endif
  gemm_scalar(m, A, lda, B, C, ldc, bias, accumulate);
}

double fma_peak_loop(SimdPath path, int64_t iterations) {
#if defined(__x86_64__)
  if (path == SimdPath::Avx512) return peak_avx512(iterations);
  if (path == SimdPath::Avx2) return peak_avx2(iterations);
#endif
  return peak_scalar(iterations);
}

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
  gemm_packed(gemm_path(), m, A, lda, pack_b(k, n, B, ldb), C, ldc, nullptr, accumulate);
#endif
}

void gemm_f64(int m, int n, int k, const double* A, int lda, const double* B, int ldb, double* C, int ldc,
              bool accumulate) {
  if (m <= 0 || n <= 0 || k <= 0) return;
#ifdef KVTC_HAVE_OPENBLAS
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0, A, lda, B, ldb, accumulate ? 1.0 : 0.0, C, ldc);
#else
#if defined(__x86_64__)
  if (gemm_path() != SimdPath::Scalar) return gemm_f64_avx2(m, n, k, A, lda, B, ldb, C, ldc, accumulate);
#endif
  gemm_f64_blocked<4, 8>(m, n, k, A, lda, B, ldb, C, ldc, accumulate);
#endif
}

}  // namespace kvtc
