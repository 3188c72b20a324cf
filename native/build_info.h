// buildInfo(): what this addon was compiled with (CUDA, OpenBLAS, SIMD) and which CUDA devices
// are usable now, with the reason when none is.
#pragma once
#include <napi.h>

namespace kvtc {
void register_build_info(Napi::Env env, Napi::Object exports);
}
