#include "cpu_dispatch.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace kvtc {

bool simd_has(SimdPath p) {
#if defined(__x86_64__) || defined(__i386__)
  switch (p) {
    case SimdPath::Scalar: return true;
    case SimdPath::Avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
             __builtin_cpu_supports("bmi2");
    case SimdPath::Avx512:
      return simd_has(SimdPath::Avx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  }
  return false;
#else
  return p == SimdPath::Scalar;
#endif
}

const char* simd_name(SimdPath p) {
  switch (p) {
    case SimdPath::Avx2: return "avx2";
    case SimdPath::Avx512: return "avx512";
    default: return "scalar";
  }
}

bool simd_parse(const char* name, SimdPath& out) {
  for (SimdPath p : {SimdPath::Scalar, SimdPath::Avx2, SimdPath::Avx512})
    if (std::strcmp(name, simd_name(p)) == 0) {
      out = p;
      return true;
    }
  return false;
}

SimdPath simd_best() {
  static const SimdPath best = [] {
    SimdPath p = SimdPath::Scalar;
    if (simd_has(SimdPath::Avx512)) p = SimdPath::Avx512;
    else if (simd_has(SimdPath::Avx2)) p = SimdPath::Avx2;
    SimdPath cap;
    const char* env = std::getenv("KVTC_SIMD");
    if (env && simd_parse(env, cap) && uint8_t(cap) < uint8_t(p)) p = cap;
    return p;
  }();
  return best;
}

}  // namespace kvtc
