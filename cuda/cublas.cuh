// cuBLAS as an optional faster path for the projection GEMMs, loaded at run time (dlopen) so the
// addon neither links nor needs it: KVTC_CUBLAS=fp32 (or 1) or tf32 asks for it by default
// (gemm.cuh), KVTC_CUBLAS=/path/libcublas.so names the library. Never loaded under emulation.
#pragma once
#include <cuda_runtime.h>

namespace kvtc::gpu {

// Whether cuBLAS could be loaded (tried once per process).
bool cublas_loaded();

// C = A * op(B) as launch_gemm (gemm.cuh) through cuBLAS SGEMM, with TF32 tensor-core math when
// tf32. Returns cudaErrorInvalidValue when cuBLAS is not loaded, cudaErrorMemoryAllocation when
// it runs out of memory (or cannot make this thread a handle), cudaErrorUnknown for any other
// cuBLAS failure (never a status that marks the CUDA context broken).
cudaError_t cublas_gemm(bool tf32, int m, int n, int k, const float* A, int lda, const float* B, int ldb, bool trans_b,
                        float* C, int ldc, cudaStream_t s);

}  // namespace kvtc::gpu
