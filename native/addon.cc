// The addon's entry point: registers the exports and nothing else.
#include <napi.h>

#include "build_info.h"
#include "js_arena.h"
#include "js_calibrate.h"
#include "js_codec.h"
#include "js_gpu.h"
#include "js_internals.h"
#include "js_profile.h"
#include "js_util.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  kvtc::register_build_info(env, exports);
  Napi::Object internals = Napi::Object::New(env);
  kvtc::register_profile(env, exports);
  kvtc::register_codec(env, exports);
  kvtc::register_calibrate(env, exports, internals);
  kvtc::register_arena(env, exports);
  kvtc::register_internals(env, internals);
  kvtc::register_gpu(env, exports);
  kvtc::register_threading(env, exports);
  exports.Set("internals", internals);
  return exports;
}

}  // namespace

NODE_API_MODULE(kvtc, Init)
