// The double-precision products of the symmetric eigensolver (eigen.h): its divide-and-conquer
// merges and the back-transform of the eigenvectors run on them, one kernel per vector path
// (the portable path uses linalg.h's gemm_f64).
#pragma once

namespace kvtc {

// C[m x n] (+)= A[m x k] * B[k x n], row-major, row strides lda/ldb/ldc in elements;
// accumulate=false overwrites C. No aliasing between C and A/B. AVX-512F only: the caller checks
// the CPU (sym_eig_path, cpu_dispatch) before calling it.
void gemm_f64_avx512(int m, int n, int k, const double* A, int lda, const double* B, int ldb, double* C, int ldc,
                     bool accumulate);
// Same contract, AVX2 + FMA only.
void gemm_f64_avx2(int m, int n, int k, const double* A, int lda, const double* B, int ldb, double* C, int ldc,
                   bool accumulate);

}  // namespace kvtc
