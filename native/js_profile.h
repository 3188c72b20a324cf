// Registers profile loading and profile facts on the addon's exports.
#pragma once
#include <napi.h>

namespace kvtc {
void register_profile(Napi::Env env, Napi::Object exports);
}
