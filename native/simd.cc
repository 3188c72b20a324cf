#include "simd.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "errors.h"

namespace kvtc {

const char* simd_path_name(SimdPath p) {
  switch (p) {
    case SimdPath::Avx512: return "avx512";
    case SimdPath::Avx2: return "avx2";
    default: return "generic";
  }
}

bool simd_supported(SimdPath p) {
#if defined(__x86_64__)
  // libgcc's cpu model also checks XCR0, so "supported" includes the OS saving the registers.
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  static const bool avx512 = avx2 && __builtin_cpu_supports("avx512f");
  switch (p) {
    case SimdPath::Avx512: return avx512;
    case SimdPath::Avx2: return avx2;
    default: return true;
  }
#else
  return p == SimdPath::Generic;
#endif
}

SimdPath simd_best() {
  if (simd_supported(SimdPath::Avx512)) return SimdPath::Avx512;
  if (simd_supported(SimdPath::Avx2)) return SimdPath::Avx2;
  return SimdPath::Generic;
}

SimdPath simd_parse(const char* name, const char* what) {
  SimdPath p;
  if (std::strcmp(name, "avx512") == 0)
    p = SimdPath::Avx512;
  else if (std::strcmp(name, "avx2") == 0)
    p = SimdPath::Avx2;
  else if (std::strcmp(name, "generic") == 0)
    p = SimdPath::Generic;
  else
    fail("E_OPTIONS", std::string(what) + " must be avx512, avx2 or generic, got '" + name + "'");
  if (!simd_supported(p))
    fail("E_OPTIONS", std::string(what) + "=" + name + " but this CPU does not support it (best: " +
                          simd_path_name(simd_best()) + ")");
  return p;
}

SimdPath simd_active() {
  // The environment is read once; a bad value is remembered and reported on every call.
  struct Choice {
    SimdPath path = SimdPath::Generic;
    std::string error;
  };
  static const Choice choice = [] {
    Choice c;
    const char* env = std::getenv("KVTC_SIMD");
    if (!env || !*env) {
      c.path = simd_best();
      return c;
    }
    try {
      c.path = simd_parse(env, "KVTC_SIMD");
    } catch (const KvtcException& e) {
      c.error = e.what();
    }
    return c;
  }();
  if (!choice.error.empty()) fail("E_OPTIONS", choice.error);
  return choice.path;
}

}  // namespace kvtc
