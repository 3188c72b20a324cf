// The row conversions of half.h. The vector paths reproduce the scalar element conversions:
//  f16 -> f32: vcvtph2ps is exact for finite values and infinities; NaNs are rebuilt as the
//              scalar code builds them (sign | exponent | payload << 13, not quieted).
//  f32 -> f16: vcvtps2ph with round-to-nearest-even agrees on finite values (overflow to
//              infinity and subnormal results included); NaNs become sign | 0x7e00 as in
//              f32_to_f16 (the instruction would keep payload bits).
//  bf16:       integer arithmetic, the same expression as f32_to_bf16 (vcvtneps2bf16 would
//              flush denormal inputs to zero).
#include <cstring>

#include "half.h"

#include "cpu_dispatch.h"

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12 reports the intrinsics' own undefined pass-through operands as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace kvtc {
namespace {

void load_scalar(const void* src, DType t, int n, float* out) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  if (t == DType::F16)
    for (int i = 0; i < n; i++) out[i] = f16_to_f32(s[i]);
  else
    for (int i = 0; i < n; i++) out[i] = bf16_to_f32(s[i]);
}

void store_scalar(const float* in, DType t, int n, void* dst) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  if (t == DType::F16)
    for (int i = 0; i < n; i++) d[i] = f32_to_f16(in[i]);
  else
    for (int i = 0; i < n; i++) d[i] = f32_to_bf16(in[i]);
}

#if KVTC_X86
// ---- AVX2: 8 elements per step, the tail by the scalar code --------------------------------

KVTC_AVX2 inline __m256 f16x8_to_f32(__m128i h) {
  const __m256 f = _mm256_cvtph_ps(h);
  const __m256i w = _mm256_cvtepu16_epi32(h);
  const __m256i mag = _mm256_and_si256(w, _mm256_set1_epi32(0x7fff));
  const __m256i nan = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7c00));
  if (_mm256_testz_si256(nan, nan)) return f;
  const __m256i bits = _mm256_or_si256(_mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x8000)), 16),
                                                       _mm256_set1_epi32(0x7f800000)),
                                       _mm256_slli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x3ff)), 13));
  return _mm256_blendv_ps(f, _mm256_castsi256_ps(bits), _mm256_castsi256_ps(nan));
}

KVTC_AVX2 inline __m128i f32x8_to_f16(__m256 v) {
  const __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256i x = _mm256_castps_si256(v);
  const __m256i ax = _mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan = _mm256_cmpgt_epi32(ax, _mm256_set1_epi32(0x7f800000));  // ax < 2^31: signed compare is fine
  if (_mm256_testz_si256(nan, nan)) return h;
  const __m256i q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x8000)),
                                    _mm256_set1_epi32(0x7e00));
  const __m128i q16 = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  const __m128i m16 = _mm_packs_epi32(_mm256_castsi256_si128(nan), _mm256_extracti128_si256(nan, 1));
  return _mm_blendv_epi8(h, q16, m16);
}

KVTC_AVX2 inline __m128i f32x8_to_bf16(__m256 v) {
  const __m256i x = _mm256_castps_si256(v);
  const __m256i ax = _mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan = _mm256_cmpgt_epi32(ax, _mm256_set1_epi32(0x7f800000));
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)),
                       _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1))),
      16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
  const __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

KVTC_AVX2 void load_avx2(const void* src, DType t, int n, float* out) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    const __m256 f = t == DType::F16 ? f16x8_to_f32(h)
                                     : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    _mm256_storeu_ps(out + i, f);
  }
  load_scalar(s + i, t, n - i, out + i);
}

KVTC_AVX2 void store_avx2(const float* in, DType t, int n, void* dst) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(in + i);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), t == DType::F16 ? f32x8_to_f16(v) : f32x8_to_bf16(v));
  }
  store_scalar(in + i, t, n - i, d + i);
}

// ---- AVX-512: 16 elements per step, the tail masked -----------------------------------------

KVTC_AVX512 inline __mmask16 tail16(int left) { return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1); }

KVTC_AVX512 void load_avx512(const void* src, DType t, int n, float* out) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m256i h = _mm256_maskz_loadu_epi16(m, s + i);
    const __m512i w = _mm512_cvtepu16_epi32(h);
    __m512 f;
    if (t == DType::F16) {
      f = _mm512_cvtph_ps(h);
      const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(w, _mm512_set1_epi32(0x7fff)), _mm512_set1_epi32(0x7c00));
      if (nan) {
        const __m512i bits = _mm512_or_si512(
            _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(w, _mm512_set1_epi32(0x8000)), 16), _mm512_set1_epi32(0x7f800000)),
            _mm512_slli_epi32(_mm512_and_si512(w, _mm512_set1_epi32(0x3ff)), 13));
        f = _mm512_mask_mov_ps(f, nan, _mm512_castsi512_ps(bits));
      }
    } else {
      f = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    }
    _mm512_mask_storeu_ps(out + i, m, f);
  }
}

KVTC_AVX512 void store_avx512(const float* in, DType t, int n, void* dst) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, in + i);
    const __m512i x = _mm512_castps_si512(v);
    const __mmask16 nan =
        _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    __m256i h;
    if (t == DType::F16) {
      h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      if (nan) {
        const __m512i q = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x8000)),
                                          _mm512_set1_epi32(0x7e00));
        h = _mm256_mask_mov_epi16(h, nan, _mm512_cvtepi32_epi16(q));
      }
    } else {
      __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)),
                                                     _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1))),
                                    16);
      r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40)));
      h = _mm512_cvtepi32_epi16(r);
    }
    _mm256_mask_storeu_epi16(d + i, m, h);
  }
}
#endif  // KVTC_X86

}  // namespace

void load_row_path(SimdPath p, const void* src, DType t, int n, float* out) {
  if (t == DType::F32) {
    std::memcpy(out, src, size_t(n) * 4);
    return;
  }
#if KVTC_X86
  if (p == SimdPath::Avx512) return load_avx512(src, t, n, out);
  if (p == SimdPath::Avx2) return load_avx2(src, t, n, out);
#endif
  load_scalar(src, t, n, out);
}

void store_row_path(SimdPath p, const float* in, DType t, int n, void* dst) {
  if (t == DType::F32) {
    std::memcpy(dst, in, size_t(n) * 4);
    return;
  }
#if KVTC_X86
  if (p == SimdPath::Avx512) return store_avx512(in, t, n, dst);
  if (p == SimdPath::Avx2) return store_avx2(in, t, n, dst);
#endif
  store_scalar(in, t, n, dst);
}

void load_row(const void* src, DType t, int n, float* out) { load_row_path(simd_best(), src, t, n, out); }
void store_row(const float* in, DType t, int n, void* dst) { store_row_path(simd_best(), in, t, n, dst); }

}  // namespace kvtc
