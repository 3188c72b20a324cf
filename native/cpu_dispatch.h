// Which SIMD kernels this CPU runs. The addon is compiled for baseline x86-64; the wide kernels
// are `__attribute__((target(...)))` functions chosen at run time here, so one binary runs on
// every x86-64 (and elsewhere only the portable paths exist).
#pragma once
#include <cstdint>

// Function attributes of the kernels of each path: the instruction sets simd_has() checks.
#if defined(__x86_64__)
#define KVTC_X86 1
#define KVTC_AVX2 __attribute__((target("avx2,fma,f16c,bmi2")))
#define KVTC_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi2")))
#endif

namespace kvtc {

enum class SimdPath : uint8_t {
  Scalar = 0,  // portable C++
  Avx2 = 1,    // AVX2 + FMA + F16C + BMI2 (Haswell, Zen 1 and later)
  Avx512 = 2,  // AVX-512 F/BW/DQ/VL + F16C + BMI2 (Skylake-SP, Ice Lake, Zen 4 and later)
};

// The widest path this CPU has, lowered by the environment variable KVTC_SIMD=scalar|avx2|avx512
// (read once per process; a value above what the CPU has is ignored).
SimdPath simd_best();

// Why KVTC_SIMD was refused (it names no path; then simd_best() ignores it), or nullptr. Callers
// that must not run on a misconfigured path (the codec) fail with E_OPTIONS and this message.
const char* simd_env_error();

// Whether this CPU can run path p.
bool simd_has(SimdPath p);

// "scalar", "avx2", "avx512".
const char* simd_name(SimdPath p);

// Parses a name as above; returns false for anything else.
bool simd_parse(const char* name, SimdPath& out);

}  // namespace kvtc
