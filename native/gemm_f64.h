// The double-precision product of the symmetric eigensolver (eigen.h): its divide-and-conquer
// merges and the back-transform of the eigenvectors run on it. linalg.h's gemm_f64 is the general
// entry point (OpenBLAS when built in); this is kvtc's own AVX-512 kernel behind it.
#pragma once

namespace kvtc {

// C[m x n] (+)= A[m x k] * B[k x n], row-major, row strides lda/ldb/ldc in elements;
// accumulate=false overwrites C. No aliasing between C and A/B. AVX-512F only: the caller checks
// the CPU (sym_eig_path, cpu_dispatch) before calling it.
void gemm_f64_avx512(int m, int n, int k, const double* A, int lda, const double* B, int ldb, double* C, int ldc,
                     bool accumulate);

}  // namespace kvtc
