// The projection and its inverse: C[m x n] = A[m x k] * op(B), float, row-major with row strides
// lda/ldb/ldc; op(B) is B [k x n], or with trans_b the transpose of B [n x k] (so one copy of the
// PCA basis serves both directions). Runs cuBLAS instead when KVTC_CUBLAS enables it (cublas.cuh). A shared-memory tiled kernel (64 x 64 tiles, 4 x 4 outputs per thread) in
// plain FP32, so GPU and CPU results agree to float rounding. Returns the launch status.
#pragma once
#include <cuda_runtime.h>

namespace kvtc::gpu {

cudaError_t launch_gemm_f32(int m, int n, int k, const float* A, int lda, const float* B, int ldb, bool trans_b,
                            float* C, int ldc, cudaStream_t s);

}  // namespace kvtc::gpu
