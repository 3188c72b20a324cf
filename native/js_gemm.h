// Test and benchmark entry points to the CPU kernels (native.internals): the packed GEMM on a
// chosen SIMD path against any matrices, the FMA peak loop, and the paths this CPU can run.
#pragma once
#include <napi.h>

namespace kvtc {

// Adds gemm, gemmRepeat, fmaPeak and simdPaths to the internals object.
void register_gemm_internals(Napi::Env env, Napi::Object internals);

}  // namespace kvtc
