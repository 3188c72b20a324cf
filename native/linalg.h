// Dense kernels the codec spends its time in: the PCA projection and its inverse (float GEMM),
// the covariance accumulation (double GEMM) and the symmetric eigensolver. Row-major throughout.
// Uses OpenBLAS/LAPACKE when the build found it (KVTC_HAVE_OPENBLAS), otherwise portable C++ with
// an AVX2+FMA path chosen at run time.
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

// Name of the kernel path in use ("openblas", "avx2", "generic") for buildInfo().
const char* linalg_path();

}  // namespace kvtc
