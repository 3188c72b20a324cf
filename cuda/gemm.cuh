// The projection and its inverse: C[m x n] = A[m x k] * op(B), float, row-major with row strides
// lda/ldb/ldc; op(B) is B [k x n], or with trans_b the transpose of B [n x k] (so one copy of the
// PCA basis serves both directions).
//
// Which kernel computes it is a mode, chosen once per process (default_gemm_mode):
//   tf32x3       tensor cores, each operand split into two TF32 parts and three products summed
//                (the "3xTF32" scheme): FP32 accuracy at tensor-core speed. The default.
//   tf32         tensor cores, one TF32 product: faster, ~1e-3 relative error in the
//                coefficients, so a GPU blob may quantize a little differently from a CPU one.
//   fp32         plain FP32 on the CUDA cores (the reference the tensor-core modes are checked
//                against on a device).
//   cublas-fp32, cublas-tf32
//                cuBLAS SGEMM, loaded at run time when KVTC_CUBLAS asks (cublas.cuh).
// KVTC_GEMM=tf32x3|tf32|fp32 picks among kvtc's own kernels; a usable KVTC_CUBLAS overrides it.
#pragma once
#include <cuda_runtime.h>

#include <string>

namespace kvtc::gpu {

enum class GemmMode { Tf32x3, Tf32, Fp32, CublasFp32, CublasTf32 };

const char* gemm_mode_name(GemmMode mode);

// The mode named `name`; E_OPTIONS for an unknown name, E_BACKEND for a cuBLAS mode when cuBLAS
// cannot be loaded.
GemmMode gemm_mode_named(const std::string& name);

// The process's mode from KVTC_CUBLAS and KVTC_GEMM; E_OPTIONS when KVTC_GEMM names no mode.
GemmMode default_gemm_mode();

// Returns the launch status.
cudaError_t launch_gemm(GemmMode mode, int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                        bool trans_b, float* C, int ldc, cudaStream_t s);

// launch_gemm in the process's mode.
cudaError_t launch_gemm_f32(int m, int n, int k, const float* A, int lda, const float* B, int ldb, bool trans_b,
                            float* C, int ldc, cudaStream_t s);

}  // namespace kvtc::gpu
