// Registers calibration on the addon's exports (and its stage timings on `internals`).
#pragma once
#include <napi.h>

namespace kvtc {
void register_calibrate(Napi::Env env, Napi::Object exports, Napi::Object internals);
}
