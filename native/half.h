// IEEE binary16 and bfloat16 conversions used by the codec (element I/O and the fp16 shift/scale
// of each quantization group). Round-to-nearest-even everywhere so results are deterministic.
#pragma once
#include <cstdint>
#include <cstring>

#include "cpu_dispatch.h"
#include "hd.h"

namespace kvtc {

KVTC_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
KVTC_HD float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

KVTC_HD float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));  // Inf / NaN
  if (exp == 0) {
    if (man == 0) return bits_f32(sign);
    // Subnormal: value = man * 2^-24, exact in f32.
    float v = float(man) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

KVTC_HD uint16_t f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return uint16_t(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));  // Inf/NaN
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // rounds to >= 65520 -> Inf
  if (ax < 0x38800000u) {
    // Result is subnormal (or zero): round ax / 2^-24 to nearest even integer.
    if (ax < 0x33000000u) return uint16_t(sign);  // below half of the smallest subnormal
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;  // 113 - e + 13
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return uint16_t(sign | r);
  }
  uint32_t r = ax + 0xc8000fffu + ((ax >> 13) & 1);  // rebias exponent (-112<<23) and round
  return uint16_t(sign | (r >> 13));
}

KVTC_HD float bf16_to_f32(uint16_t b) { return bits_f32(uint32_t(b) << 16); }

KVTC_HD uint16_t f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);  // keep NaN a NaN
  x += 0x7fff + ((x >> 16) & 1);
  return uint16_t(x >> 16);
}

enum class DType : uint8_t { F32 = 0, F16 = 1, BF16 = 2 };

KVTC_HD int dtype_bytes(DType t) { return t == DType::F32 ? 4 : 2; }

// Neither NaN nor an infinity (a bit test, the same on host and device under fast math).
KVTC_HD bool finite_f32(float v) { return (f32_bits(v) & 0x7f800000u) != 0x7f800000u; }

// One element of dtype t at index i of src, as a float (and the inverse).
KVTC_HD float load_elem(const void* src, DType t, size_t i) {
  if (t == DType::F32) return static_cast<const float*>(src)[i];
  const uint16_t h = static_cast<const uint16_t*>(src)[i];
  return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}
KVTC_HD void store_elem(float v, DType t, void* dst, size_t i) {
  if (t == DType::F32) {
    static_cast<float*>(dst)[i] = v;
  } else {
    static_cast<uint16_t*>(dst)[i] = t == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
  }
}

// Row conversions, vectorized (F16C for f16, integer shifts for bf16) on the widest path the
// CPU has, bit-for-bit the scalar conversions above on every input: NaN payloads included
// (the hardware f16 conversions quiet signalling NaNs and keep payload bits the scalar code
// does not, so NaN lanes are patched), denormals, and ties to even.

// Reads n elements of dtype t starting at src into out[0..n) (floats).
void load_row(const void* src, DType t, int n, float* out);
void load_row_path(SimdPath p, const void* src, DType t, int n, float* out);

// Writes in[0..n) as n elements of dtype t at dst.
void store_row(const float* in, DType t, int n, void* dst);
void store_row_path(SimdPath p, const float* in, DType t, int n, void* dst);

}  // namespace kvtc
