// Registers the host arena, byte copies and CRC-32C on the addon's exports.
#pragma once
#include <napi.h>

namespace kvtc {
void register_arena(Napi::Env env, Napi::Object exports);
}
