// Registers the test and benchmark entry points on `internals`.
#pragma once
#include <napi.h>

namespace kvtc {
void register_internals(Napi::Env env, Napi::Object internals);
}
