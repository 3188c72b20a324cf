#include "cpu_dispatch.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>

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

namespace {
// KVTC_SIMD, read once: the path it leaves, and why it was refused when it names no path.
struct SimdChoice {
  SimdPath best = SimdPath::Scalar;
  std::string error;
};
const SimdChoice& simd_choice() {
  static const SimdChoice c = [] {
    SimdChoice r;
    if (simd_has(SimdPath::Avx512)) r.best = SimdPath::Avx512;
    else if (simd_has(SimdPath::Avx2)) r.best = SimdPath::Avx2;
    SimdPath cap;
    const char* env = std::getenv("KVTC_SIMD");
    if (env && *env && !simd_parse(env, cap))
      r.error = std::string("KVTC_SIMD must be avx512, avx2 or scalar, got '") + env + "'";
    else if (env && *env && uint8_t(cap) < uint8_t(r.best))
      r.best = cap;
    return r;
  }();
  return c;
}
}  // namespace

SimdPath simd_best() { return simd_choice().best; }

const char* simd_env_error() { return simd_choice().error.empty() ? nullptr : simd_choice().error.c_str(); }

}  // namespace kvtc
