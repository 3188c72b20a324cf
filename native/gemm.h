// The float GEMM behind the codec's projections, with the right-hand matrix packed once.
// The codec multiplies every batch of tokens by the same basis (encode: D = X·Bᵀ, decode:
// X = D·B), so the basis is packed at profile load into the layout the micro-kernels stream
// (PackedB) and each call only walks tiles. The layout is the same for every SIMD path, so a
// profile packed once serves whichever path runs. All matrices are row-major float32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "cpu_dispatch.h"

namespace kvtc {

// The SIMD path the codec's kernels run on: simd_best() (KVTC_SIMD lowers it). Throws E_OPTIONS
// when KVTC_SIMD names no path, so a misspelled override fails instead of silently not applying.
SimdPath gemm_path();

// Columns per panel of a PackedB: one AVX-512 vector, two AVX2 vectors.
constexpr int kPanel = 16;

// A k x n right-hand matrix as ceil(n/16) panels, each k rows of 16 consecutive columns
// (zero-padded past n), 64-byte aligned. Immutable once built; copies share the storage.
struct PackedB {
  int k = 0, n = 0;
  std::shared_ptr<const float> data;  // panels() * k * kPanel floats
  int panels() const { return (n + kPanel - 1) / kPanel; }
  const float* panel(int j) const { return data.get() + size_t(j) * k * kPanel; }
};

// Packs B (k x n, row stride ldb elements). Throws E_CAPACITY if the storage cannot be had.
PackedB pack_b(int k, int n, const float* B, int ldb);

// Packs the transpose of Bt: Bt is n x k (row stride ldbt), the packed matrix is B = Btᵀ (k x n).
// The encoder's right-hand matrix is the basis transposed; this packs it from the basis itself.
PackedB pack_bt(int k, int n, const float* Bt, int ldbt);

// C[m x n] = A[m x k]·B (+ bias[n] per row when bias is not null) (+ the old C when accumulate).
// The sum over k runs in order 0..k-1 with one fused multiply-add per term on the avx2 and
// avx512 paths (so those two give identical results); scalar rounds each product.
// lda/ldc: row strides in elements. A, C, bias: borrowed; C must not alias A, B or bias.
void gemm_packed(SimdPath path, int m, const float* A, int lda, const PackedB& B, float* C, int ldc,
                 const float* bias, bool accumulate);

// Number of single-precision floating-point operations (2 per FMA) a short register-only FMA
// loop of `iterations` steps performs on `path`; runs it (the ceiling the GEMM is measured
// against). Returns the FLOP count; callers time the call.
double fma_peak_loop(SimdPath path, int64_t iterations);

}  // namespace kvtc
