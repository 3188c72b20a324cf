// The FP32 GEMM on the CUDA cores: 64 x 64 output tiles, 4 x 4 outputs per thread, operands staged
// through shared memory.
#include "cuda_check.cuh"
#include "gemm_kernels.cuh"

namespace kvtc::gpu {
namespace {

constexpr int kTile = kGemmRowTile, kDepth = 16, kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    gemm_f32_kernel(int m, int n, int k, const float* A, int lda, const float* B, int ldb, bool trans_b, float* C,
                    int ldc) {
  // A is stored transposed in shared memory so that both operands are read along rows; the
  // padding column keeps the transposing stores free of bank conflicts.
  __shared__ float As[kDepth][kTile + 1];
  __shared__ float Bs[kDepth][kTile + 1];
  const int tx = int(threadIdx.x) % 16, ty = int(threadIdx.x) / 16;
  const int row0 = int(blockIdx.y) * kTile, col0 = int(blockIdx.x) * kTile;
  float acc[4][4];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
  for (int k0 = 0; k0 < k; k0 += kDepth) {
    for (int e = int(threadIdx.x); e < kTile * kDepth; e += kThreads) {
      const int r = e / kDepth, c = e % kDepth;  // consecutive threads read along A's rows
      const int gr = row0 + r, gc = k0 + c;
      As[c][r] = gr < m && gc < k ? A[size_t(gr) * lda + gc] : 0.0f;
    }
    for (int e = int(threadIdx.x); e < kTile * kDepth; e += kThreads) {
      // Consecutive threads read consecutive addresses in both layouts.
      const int r = trans_b ? e % kDepth : e / kTile, c = trans_b ? e / kDepth : e % kTile;
      const int gr = k0 + r, gc = col0 + c;
      const bool in = gr < k && gc < n;
      Bs[r][c] = !in ? 0.0f : trans_b ? B[size_t(gc) * ldb + gr] : B[size_t(gr) * ldb + gc];
    }
    __syncthreads();
    for (int kk = 0; kk < kDepth; kk++) {
      float a[4], b[4];
      for (int i = 0; i < 4; i++) a[i] = As[kk][ty + 16 * i];
      for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + 16 * j];
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) {
      const int r = row0 + ty + 16 * i, c = col0 + tx + 16 * j;
      if (r < m && c < n) C[size_t(r) * ldc + c] = acc[i][j];
    }
}

}  // namespace

cudaError_t launch_gemm_simt(int m, int n, int k, const float* A, int lda, const float* B, int ldb, bool trans_b,
                             float* C, int ldc, cudaStream_t s) {
  const dim3 grid((n + kTile - 1) / kTile, (m + kTile - 1) / kTile);
  KVTC_LAUNCH(gemm_f32_kernel, grid, dim3(kThreads), s, m, n, k, A, lda, B, ldb, trans_b, C, ldc);
  return cudaGetLastError();
}

}  // namespace kvtc::gpu
