// Registers native.internals.kernels (the leaf kernels, for tests and benchmarks).
#pragma once
#include <napi.h>

namespace kvtc {
void register_kernel_internals(Napi::Env env, Napi::Object internals);
}
