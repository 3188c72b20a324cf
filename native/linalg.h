// The general dense products: float GEMM (calibration's projections; the codec's own use the
// packed basis, gemm.h) and double GEMM (covariance accumulation). Row-major throughout. The
// symmetric eigensolver is in eigen.h.
// Uses OpenBLAS/LAPACKE when the build found it (KVTC_HAVE_OPENBLAS), otherwise kvtc's own
// kernels (gemm.cc: the SIMD path chosen at run time, cpu_dispatch.h).
#pragma once
#include <cstdint>
#include <vector>

namespace kvtc {

// C[m x n] (+)= A[m x k] * B[k x n]. lda/ldb/ldc are row strides in elements. accumulate=false
// overwrites C. No aliasing between C and A/B.
void gemm_f32(int m, int n, int k, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
              bool accumulate);
void gemm_f64(int m, int n, int k, const double* A, int lda, const double* B, int ldb, double* C, int ldc,
              bool accumulate);

// Name of the kernel path in use ("openblas", "avx512", "avx2", "scalar") for buildInfo().
const char* linalg_path();

}  // namespace kvtc
