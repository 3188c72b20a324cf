// Dense kernels the codec spends its time in: the PCA projection and its inverse (float GEMM),
// the covariance accumulation (double GEMM) and the symmetric eigensolver. Row-major throughout.
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

// Eigen-decomposition of a symmetric n x n matrix (row-major, full storage; destroyed).
// evals: n eigenvalues in descending order. evecs: n x n row-major, row i = unit eigenvector i,
// sign fixed so that its largest-magnitude entry is positive (so calibration is deterministic).
// Throws E_CALIBRATION if the iteration fails to converge.
void sym_eig_desc(int n, std::vector<double>& a, std::vector<double>& evals, std::vector<double>& evecs);

// Name of the kernel path in use ("openblas", "avx512", "avx2", "scalar") for buildInfo().
const char* linalg_path();

}  // namespace kvtc
