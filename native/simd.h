// Which vector instruction set the CPU kernels (GEMM) run on. Chosen at run time, never at
// build time: the addon is compiled for baseline x86-64 and carries AVX2 and AVX-512 code in
// `__attribute__((target))` functions. KVTC_SIMD (avx512 | avx2 | generic) overrides the
// choice for the whole process, so tests and benchmarks can force a path; it is read here and
// nowhere else.
#pragma once
#include <cstdint>

namespace kvtc {

enum class SimdPath : uint8_t { Generic = 0, Avx2 = 1, Avx512 = 2 };

// "generic", "avx2", "avx512".
const char* simd_path_name(SimdPath p);

// Whether this CPU (and OS, for the register state) can run path p. Generic: always.
bool simd_supported(SimdPath p);

// The widest path the CPU supports, ignoring KVTC_SIMD.
SimdPath simd_best();

// The path in use: KVTC_SIMD when set, else simd_best(). Throws E_OPTIONS when KVTC_SIMD names
// no path, or one this CPU cannot run (every call, so the error reaches whoever asks).
SimdPath simd_active();

// Parses a path name; throws E_OPTIONS naming `what` for anything else or an unsupported path.
SimdPath simd_parse(const char* name, const char* what);

}  // namespace kvtc
