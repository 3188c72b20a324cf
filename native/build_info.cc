#include "build_info.h"

#include "errors.h"
#include "gemm_int8.h"
#include "linalg.h"
#include "gemm.h"

#ifdef KVTC_WITH_CUDA
#include "../cuda/device.cuh"
#include "../cuda/gpu.h"
#endif

namespace kvtc {
namespace {

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef KVTC_CUDA_EMULATED
  o.Set("cudaEmulated", true);
#else
  o.Set("cudaEmulated", false);
#endif
#ifdef KVTC_WITH_CUDA
  o.Set("cuda", true);
  int count = 0;
  char reason[256] = {0};
  kvtc_cuda_device_count(&count, reason, sizeof(reason));
  o.Set("cudaDevices", count);
  o.Set("cudaReason", count > 0 ? env.Null() : Napi::String::New(env, reason));
  o.Set("cudaGemm", gpu::gemm_path());
#else
  o.Set("cuda", false);
  o.Set("cudaDevices", 0);
  o.Set("cudaReason", "built without CUDA (no toolkit found, or KVTC_CUDA=OFF)");
  o.Set("cudaGemm", env.Null());
#endif
#ifdef KVTC_HAVE_OPENBLAS
  o.Set("openblas", true);
#else
  o.Set("openblas", false);
#endif
  // The codec's projections always run on kvtc's own packed-basis kernels ($KVTC_SIMD forces a
  // path). An invalid $KVTC_SIMD is reported here as its message (as cudaGemm reports
  // $KVTC_GEMM); the calls that need a path fail with E_OPTIONS.
  try {
    o.Set("linalg", linalg_path());
    o.Set("codecGemm", simd_name(gemm_path()));
  } catch (const KvtcException& e) {
    o.Set("linalg", e.what());
    o.Set("codecGemm", e.what());
  }
  // The decoder's reconstruction: 'int8' (VNNI, the default where the CPU has it, for profiles of
  // ratio >= kInt8DefaultMinRatio) or 'f32'
  // (dequantize + GEMM; KVTC_DECODE=f32, or no VNNI).
  try {
    o.Set("codecDecode", int8_decode_selected() ? "int8" : "f32");
  } catch (const KvtcException& e) {
    o.Set("codecDecode", e.what());
  }
#if defined(__x86_64__)
  Napi::Array simd = Napi::Array::New(env);
  uint32_t i = 0;
  if (__builtin_cpu_supports("sse4.2")) simd.Set(i++, "sse4.2");
  if (__builtin_cpu_supports("avx2")) simd.Set(i++, "avx2");
  if (__builtin_cpu_supports("fma")) simd.Set(i++, "fma");
  if (__builtin_cpu_supports("avx512f")) simd.Set(i++, "avx512f");
  if (__builtin_cpu_supports("avx512vnni")) simd.Set(i++, "avx512vnni");
  o.Set("simd", simd);
#else
  o.Set("simd", Napi::Array::New(env));
#endif
  return o;
}

}  // namespace

void register_build_info(Napi::Env env, Napi::Object exports) {
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
}

}  // namespace kvtc
