// The addon's entry point: registers the exports and nothing else.
#include <napi.h>

#include "build_info.h"
#include "js_codec.h"
#include "js_gpu.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  kvtc::register_build_info(env, exports);
  kvtc::register_codec(env, exports);
  kvtc::register_gpu(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(kvtc, Init)
