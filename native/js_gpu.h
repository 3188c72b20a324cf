// Registers exports.gpu (the CUDA backend's device-address API) in CUDA builds; nothing otherwise.
#pragma once
#include <napi.h>

namespace kvtc {
void register_gpu(Napi::Env env, Napi::Object exports);
}
