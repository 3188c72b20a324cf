// cuBLAS as an optional faster path for the projection GEMMs, loaded at run time (dlopen) so the
// addon neither links nor needs it. Off unless KVTC_CUBLAS asks: "fp32" (or "1") for plain FP32
// SGEMM, "tf32" for tensor-core TF32 math (faster, ~1e-3 relative error in the coefficients),
// or a path to libcublas.so. When unset, unloadable or emulated, the own FP32 kernel runs.
#pragma once
#include <cuda_runtime.h>

#include <string>

namespace kvtc::gpu {

// "kernel", "cublas-fp32" or "cublas-tf32": the GEMM path in use (decided once per process).
const char* gemm_path();

// C = A * op(B) as launch_gemm_f32, through cuBLAS; *used is false (and nothing ran) when cuBLAS
// is not in use. Returns the launch status.
cudaError_t cublas_gemm_f32(int m, int n, int k, const float* A, int lda, const float* B, int ldb, bool trans_b,
                            float* C, int ldc, cudaStream_t s, bool* used);

}  // namespace kvtc::gpu
