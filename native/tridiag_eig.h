// Eigen-decomposition of a symmetric tridiagonal matrix by divide and conquer (the middle stage of
// the symmetric eigensolver, eigen.h).
#pragma once
#include <cstddef>

namespace kvtc {

// C[m x n] (+)= A[m x k] * B[k x n], row-major, row strides lda/ldb/ldc in elements; accumulate=false
// overwrites C. No aliasing between C and A/B. The merges' products run on it (gemm_f64.h).
using GemmF64Fn = void (*)(int m, int n, int k, const double* A, int lda, const double* B, int ldb, double* C, int ldc,
                           bool accumulate);

// T: diagonal d[0..n), off-diagonal e[0..n-1) (e[i] = T[i][i+1]; e[n-1] is ignored).
// On return d holds the eigenvalues in ascending order and e is destroyed. Z: caller-owned n x n,
// row-major, row stride ldz >= n; on return row i is the unit eigenvector of d[i]. gemm does the
// merges' products. path: the vector path of the rest ("avx512", "avx2", anything else portable;
// the caller checks the CPU). Throws E_CALIBRATION if an iteration fails to converge (NaN/Inf
// input).
// Its working buffers (about 4 n^2 doubles) are kept per thread for the next call.
void tridiag_eig(int n, double* d, double* e, double* Z, size_t ldz, GemmF64Fn gemm, const char* path);

// Frees the calling thread's buffers of tridiag_eig.
void tridiag_eig_release();

}  // namespace kvtc
