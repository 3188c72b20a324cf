#include "cublas.cuh"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

namespace kvtc::gpu {
namespace {

// The few cuBLAS declarations used, so no cuBLAS header is needed at build time.
typedef struct cublasContext* cublasHandle_t;
typedef int cublasStatus_t;
constexpr int kOpN = 0, kOpT = 1;               // cublasOperation_t
constexpr int kDefaultMath = 0, kTf32Math = 3;  // cublasMath_t
using CreateFn = cublasStatus_t (*)(cublasHandle_t*);
using SetStreamFn = cublasStatus_t (*)(cublasHandle_t, cudaStream_t);
using SetMathModeFn = cublasStatus_t (*)(cublasHandle_t, int);
using SgemmFn = cublasStatus_t (*)(cublasHandle_t, int, int, int, int, int, const float*, const float*, int,
                                   const float*, int, const float*, float*, int);

struct Cublas {
  CreateFn create = nullptr;
  SetStreamFn set_stream = nullptr;
  SetMathModeFn set_math = nullptr;
  SgemmFn sgemm = nullptr;
};

const Cublas* load() {
  static Cublas lib;
  static const Cublas* loaded = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
#if !defined(KVTC_CUDA_EMULATED)
    const char* want = std::getenv("KVTC_CUBLAS");
    void* h = nullptr;
    if (want && std::strchr(want, '/')) {
      h = dlopen(want, RTLD_NOW | RTLD_LOCAL);
    } else {
      for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"})
        if ((h = dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
    }
    if (!h) return;
    lib.create = reinterpret_cast<CreateFn>(dlsym(h, "cublasCreate_v2"));
    lib.set_stream = reinterpret_cast<SetStreamFn>(dlsym(h, "cublasSetStream_v2"));
    lib.set_math = reinterpret_cast<SetMathModeFn>(dlsym(h, "cublasSetMathMode"));
    lib.sgemm = reinterpret_cast<SgemmFn>(dlsym(h, "cublasSgemm_v2"));
    if (lib.create && lib.set_stream && lib.set_math && lib.sgemm) loaded = &lib;
#endif
  });
  return loaded;
}

// One handle per thread (the addon's worker threads live as long as the process); a failed
// creation (out of memory, say) is tried again at the next call.
cublasHandle_t handle(const Cublas& lib) {
  thread_local cublasHandle_t h = nullptr;
  if (!h && lib.create(&h) != 0) h = nullptr;
  return h;
}

// A cuBLAS status as a CUDA error: out of memory stays E_CAPACITY, and nothing else may look
// like the sticky launch failures that mark the whole CUDA context as broken (cuda_check.cuh).
cudaError_t as_cuda_error(cublasStatus_t st) {
  constexpr cublasStatus_t kAllocFailed = 3;
  return st == 0 ? cudaSuccess : st == kAllocFailed ? cudaErrorMemoryAllocation : cudaErrorUnknown;
}

}  // namespace

bool cublas_loaded() { return load() != nullptr; }

cudaError_t cublas_gemm(bool tf32, int m, int n, int k, const float* A, int lda, const float* B, int ldb, bool trans_b,
                        float* C, int ldc, cudaStream_t s) {
  const Cublas* lib = load();
  if (!lib) return cudaErrorInvalidValue;
  cublasHandle_t h = handle(*lib);
  if (!h) return cudaErrorMemoryAllocation;
  if (const cudaError_t e = as_cuda_error(lib->set_stream(h, s)); e != cudaSuccess) return e;
  if (const cudaError_t e = as_cuda_error(lib->set_math(h, tf32 ? kTf32Math : kDefaultMath)); e != cudaSuccess) return e;
  // cuBLAS is column-major: a row-major X is the column-major X^T, so C^T = op(B)^T * A^T.
  // Row-major B [k x n] is column-major [n x k] (no transpose); row-major B [n x k] (trans_b) is
  // column-major [k x n], transposed to [n x k].
  const float one = 1.0f, zero = 0.0f;
  return as_cuda_error(lib->sgemm(h, trans_b ? kOpT : kOpN, kOpN, n, m, k, &one, B, ldb, A, lda, &zero, C, ldc));
}

}  // namespace kvtc::gpu
