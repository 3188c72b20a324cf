// The projection and its inverse: C[m x n] = A[m x k] * B[k x n], float, row-major with row
// strides lda/ldb/ldc. A shared-memory tiled kernel (64 x 64 tiles, 4 x 4 outputs per thread) in
// plain FP32, so GPU and CPU results agree to float rounding. Returns the launch status.
#pragma once
#include <cuda_runtime.h>

namespace kvtc::gpu {

cudaError_t launch_gemm_f32(int m, int n, int k, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                            cudaStream_t s);

}  // namespace kvtc::gpu
