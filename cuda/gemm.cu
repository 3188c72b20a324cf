// Chooses the GEMM kernel (gemm.cuh): the process's mode and the dispatch of one launch.
#include "gemm.cuh"

#include <cstdlib>
#include <cstring>

#include "cublas.cuh"
#include "cuda_check.cuh"
#include "gemm_kernels.cuh"

namespace kvtc::gpu {

const char* gemm_mode_name(GemmMode mode) {
  switch (mode) {
    case GemmMode::Tf32x3: return "tf32x3";
    case GemmMode::Tf32: return "tf32";
    case GemmMode::Fp32: return "fp32";
    case GemmMode::CublasFp32: return "cublas-fp32";
    case GemmMode::CublasTf32: return "cublas-tf32";
  }
  return "unknown";
}

GemmMode gemm_mode_named(const std::string& name) {
  for (GemmMode m : {GemmMode::Tf32x3, GemmMode::Tf32, GemmMode::Fp32, GemmMode::CublasFp32, GemmMode::CublasTf32}) {
    if (name != gemm_mode_name(m)) continue;
    if ((m == GemmMode::CublasFp32 || m == GemmMode::CublasTf32) && !cublas_loaded())
      fail("E_BACKEND", "GEMM mode " + name + ": cuBLAS could not be loaded (set KVTC_CUBLAS to its path)");
    return m;
  }
  fail("E_OPTIONS", "unknown GEMM mode '" + name + "': expected tf32x3, tf32, fp32, cublas-fp32 or cublas-tf32");
}

GemmMode default_gemm_mode() {
  // Decided once: every blob of a process is coded with the same arithmetic.
  static const struct Choice {
    GemmMode mode = GemmMode::Tf32x3;
    std::string error;
  } choice = [] {
    Choice c;
    const char* cublas = std::getenv("KVTC_CUBLAS");
    if (cublas && *cublas && std::strcmp(cublas, "0") != 0 && cublas_loaded()) {
      c.mode = std::strcmp(cublas, "tf32") == 0 ? GemmMode::CublasTf32 : GemmMode::CublasFp32;
      return c;
    }
    const char* own = std::getenv("KVTC_GEMM");
    if (!own || !*own) return c;
    const std::string name = own;
    if (name == "tf32x3" || name == "tf32" || name == "fp32")
      c.mode = gemm_mode_named(name);
    else
      c.error = "KVTC_GEMM=" + name + " is not a GEMM mode: expected tf32x3, tf32 or fp32";
    return c;
  }();
  if (!choice.error.empty()) fail("E_OPTIONS", choice.error);
  return choice.mode;
}

cudaError_t launch_gemm(GemmMode mode, int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                        bool trans_b, float* C, int ldc, cudaStream_t s) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  if ((m + kGemmRowTile - 1) / kGemmRowTile > 65535) return cudaErrorInvalidValue;  // grid.y limit: callers batch rows
  if (k <= 0) return cudaMemsetAsync(C, 0, size_t(m) * ldc * sizeof(float), s);  // only valid for ldc == n
  switch (mode) {
    case GemmMode::Tf32x3: return launch_gemm_tf32(true, m, n, k, A, lda, B, ldb, trans_b, C, ldc, s);
    case GemmMode::Tf32: return launch_gemm_tf32(false, m, n, k, A, lda, B, ldb, trans_b, C, ldc, s);
    case GemmMode::Fp32: return launch_gemm_simt(m, n, k, A, lda, B, ldb, trans_b, C, ldc, s);
    case GemmMode::CublasFp32: return cublas_gemm(false, m, n, k, A, lda, B, ldb, trans_b, C, ldc, s);
    case GemmMode::CublasTf32: return cublas_gemm(true, m, n, k, A, lda, B, ldb, trans_b, C, ldc, s);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_gemm_f32(int m, int n, int k, const float* A, int lda, const float* B, int ldb, bool trans_b,
                            float* C, int ldc, cudaStream_t s) {
  return launch_gemm(default_gemm_mode(), m, n, k, A, lda, B, ldb, trans_b, C, ldc, s);
}

}  // namespace kvtc::gpu
