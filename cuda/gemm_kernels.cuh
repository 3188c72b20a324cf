// kvtc's own GEMM kernels behind launch_gemm (gemm.cuh), same arguments and layouts. The caller
// has checked m, n, k > 0 and the grid limit (m rows fit in 65535 row tiles of 64).
#pragma once
#include <cuda_runtime.h>

namespace kvtc::gpu {

constexpr int kGemmRowTile = 64;

// FP32 on the CUDA cores.
cudaError_t launch_gemm_simt(int m, int n, int k, const float* A, int lda, const float* B, int ldb, bool trans_b,
                             float* C, int ldc, cudaStream_t s);

// TF32 tensor cores; split = true for the 3xTF32 scheme (FP32 accuracy), false for one product.
cudaError_t launch_gemm_tf32(bool split, int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                             bool trans_b, float* C, int ldc, cudaStream_t s);

}  // namespace kvtc::gpu
