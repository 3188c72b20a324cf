// Registers the codec (encode, decode, inspect, scan) on the addon's exports.
#pragma once
#include <napi.h>

namespace kvtc {
void register_codec(Napi::Env env, Napi::Object exports);
}
