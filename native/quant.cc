#include "quant.h"

#include <algorithm>
#include <cstring>

#include "cpu_dispatch.h"

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12 reports the intrinsics' own undefined pass-through operands as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace kvtc {

RowLayout make_row_layout(const std::vector<PlanGroup>& groups, bool static_byte_contexts) {
  RowLayout l;
  l.groups = groups;
  uint32_t off = 0;
  for (size_t j = 0; j < groups.size(); j++) {
    const PlanGroup& g = groups[j];
    l.offset.push_back(off);
    const uint16_t base = uint16_t(j * kContextsPerGroup);
    const uint32_t hb = group_header_bytes(g.mode);
    for (uint16_t c = 0; c < hb; c++) l.context.push_back(base + c);
    const uint32_t nb = packed_bytes(g.size, g.bits);
    for (uint32_t b = 0; b < nb; b++) l.context.push_back(uint16_t(base + code_context(g.mode, b, static_byte_contexts)));
    off += hb + nb;
    l.k = std::max(l.k, g.start + g.size);
  }
  l.rowBytes = off;
  return l;
}

namespace {

// The scalar definitions, kept out of line so that no SIMD-target caller inlines them and lets
// the compiler fuse their products and sums into FMAs (that would round differently).
__attribute__((noinline)) void quantize_group_scalar(const float* x, uint32_t size, uint32_t bits, uint8_t* out) {
  quantize_group(x, size, bits, out);
}
__attribute__((noinline)) void dequantize_group_scalar(const uint8_t* in, uint32_t size, uint32_t bits, float* x) {
  dequantize_group(in, size, bits, x);
}
__attribute__((noinline)) double group_sq_error_scalar(const float* d, uint32_t size, uint32_t bits) {
  const GroupParams g = group_params(d, size, bits);
  const uint32_t maxq = (1u << bits) - 1;
  double err = 0;
  for (uint32_t i = 0; i < size; i++) {
    const float r = g.shift + float(code_of(d[i], g, maxq)) * g.scale;
    const double e = double(d[i]) - double(r);
    err += e * e;
  }
  return err;
}

// Whether the vector kernels reproduce the scalar ones for a group with this min and max: a NaN
// or a signed zero makes the scalar result depend on the order of the comparisons, and
// non-finite parameters make it depend on NaN propagation; both go to the scalar code.
inline bool vector_safe(float mn, float mx, const GroupParams& g) {
  return mn != 0.0f && mx != 0.0f && finite_f32(g.shift) && finite_f32(g.scale);
}

// Codes are computed a block at a time into a byte buffer: 1024 codes of any width end on a
// byte boundary, so each block packs on its own.
constexpr uint32_t kBlock = 1024;

#if KVTC_X86
// Hides a value from the optimizer so a product is rounded before the sum that follows it, as
// in the scalar code (GCC would otherwise contract the two into an FMA in an FMA target).
#define KVTC_OPAQUE(v) __asm__("" : "+v"(v))

// Packs codes c[0..n) (n <= kBlock; c holds zeros up to the next multiple of 16) LSB-first into
// packed_bytes(n, bits) bytes at out.
KVTC_AVX2 void pack_codes(const uint8_t* c, uint32_t n, uint32_t bits, uint8_t* out) {
  const uint32_t nbytes = packed_bytes(n, bits);
  if (bits == 8) {
    std::memcpy(out, c, n);
    return;
  }
  if (bits == 4 || bits == 2) {
    const uint32_t per = 2 * bits;  // bytes per 16 codes
    for (uint32_t i = 0, o = 0; i < n; i += 16, o += per) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + i));
      __m128i v;
      if (bits == 4) {
        v = _mm_maddubs_epi16(b, _mm_set1_epi16(0x1001));  // c0 + 16 c1
        v = _mm_packus_epi16(v, v);
      } else {
        v = _mm_maddubs_epi16(b, _mm_set1_epi16(0x0401));    // c0 + 4 c1
        v = _mm_madd_epi16(v, _mm_set1_epi32(0x00100001));  // (c0 + 4 c1) + 16 (c2 + 4 c3)
        v = _mm_packus_epi32(v, v);
        v = _mm_packus_epi16(v, v);
      }
      alignas(16) uint8_t t[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(t), v);
      std::memcpy(out + o, t, std::min(per, nbytes - o));
    }
    return;
  }
  uint64_t acc = 0;
  uint32_t nacc = 0;
  for (uint32_t i = 0; i < n; i++) {
    acc |= uint64_t(c[i]) << nacc;
    nacc += bits;
    while (nacc >= 8) {
      *out++ = uint8_t(acc);
      acc >>= 8;
      nacc -= 8;
    }
  }
  if (nacc > 0) *out = uint8_t(acc);
}

// Lane i of a code chunk starts at bit i * bits of the chunk's bytes; for widths dividing 8 no
// code straddles a byte. Byte-shuffle control putting that byte in the low byte of 32-bit lane i
// (of 16), and the right shift that brings the code down. A byte shuffle indexes within 128-bit
// lanes, so the kernels broadcast the chunk's bytes to every lane first.
struct UnpackCtl {
  alignas(64) uint8_t shuffle[64];
  alignas(64) uint32_t shift[16];
};
inline UnpackCtl unpack_ctl(uint32_t bits) {
  UnpackCtl u;
  for (int i = 0; i < 16; i++) {
    u.shuffle[4 * i] = uint8_t((i * bits) / 8);
    u.shuffle[4 * i + 1] = u.shuffle[4 * i + 2] = u.shuffle[4 * i + 3] = 0x80;
    u.shift[i] = (i * bits) % 8;
  }
  return u;
}
inline bool unpackable(uint32_t bits) { return bits == 1 || bits == 2 || bits == 4 || bits == 8; }

// ---- AVX2 ---------------------------------------------------------------------------------

KVTC_AVX2 inline __m256i tail_mask8(uint32_t left) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::min<uint32_t>(left, 8))), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

KVTC_AVX2 inline float hmin8(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
KVTC_AVX2 inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// Min and max of x[0..size); false if a NaN is among them.
KVTC_AVX2 bool minmax_avx2(const float* x, uint32_t size, float& mn, float& mx) {
  const __m256 first = _mm256_set1_ps(x[0]);
  __m256 vmn = first, vmx = first;
  int nan = 0;
  uint32_t i = 0;
  for (; i + 8 <= size; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    nan |= _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    vmn = _mm256_min_ps(vmn, v);
    vmx = _mm256_max_ps(vmx, v);
  }
  if (i < size) {
    const __m256i m = tail_mask8(size - i);
    const __m256 v = _mm256_blendv_ps(first, _mm256_maskload_ps(x + i, m), _mm256_castsi256_ps(m));
    nan |= _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    vmn = _mm256_min_ps(vmn, v);
    vmx = _mm256_max_ps(vmx, v);
  }
  mn = hmin8(vmn);
  mx = hmax8(vmx);
  return nan == 0;
}

// Rounded, clamped codes of 8 values as 32-bit integers; false if a rounded value is NaN.
KVTC_AVX2 inline bool codes8(__m256 v, __m256 sh, __m256 inv, __m256 top, __m256i& c) {
  const __m256 t = _mm256_mul_ps(_mm256_sub_ps(v, sh), inv);
  const __m256 q = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if (_mm256_movemask_ps(_mm256_cmp_ps(q, q, _CMP_UNORD_Q))) return false;
  c = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()), top));
  return true;
}

KVTC_AVX2 inline __m256 load8(const float* x, uint32_t left) {
  return left >= 8 ? _mm256_loadu_ps(x) : _mm256_maskload_ps(x, tail_mask8(left));
}

KVTC_AVX2 bool quantize_group_avx2(const float* x, uint32_t size, uint32_t bits, uint8_t* out) {
  float mn, mx;
  if (!minmax_avx2(x, size, mn, mx)) return false;
  const GroupParams g = group_params_minmax(mn, mx, bits);
  if (!vector_safe(mn, mx, g)) return false;
  out[0] = uint8_t(g.shift_h);
  out[1] = uint8_t(g.shift_h >> 8);
  out[2] = uint8_t(g.scale_h);
  out[3] = uint8_t(g.scale_h >> 8);
  const __m256 sh = _mm256_set1_ps(g.shift), inv = _mm256_set1_ps(g.inv_scale),
               top = _mm256_set1_ps(float((1u << bits) - 1));
  alignas(32) uint8_t buf[kBlock + 16];
  for (uint32_t b0 = 0; b0 < size; b0 += kBlock) {
    const uint32_t bn = std::min(kBlock, size - b0);
    for (uint32_t i = 0; i < bn; i += 8) {
      __m256i c;
      if (!codes8(load8(x + b0 + i, bn - i), sh, inv, top, c)) return false;
      c = _mm256_and_si256(c, tail_mask8(bn - i));  // codes past the end are zero
      const __m256i w = _mm256_packus_epi16(_mm256_packus_epi32(c, c), _mm256_setzero_si256());
      const uint32_t lo = uint32_t(_mm_cvtsi128_si32(_mm256_castsi256_si128(w)));
      const uint32_t hi = uint32_t(_mm_cvtsi128_si32(_mm256_extracti128_si256(w, 1)));
      std::memcpy(buf + i, &lo, 4);
      std::memcpy(buf + i + 4, &hi, 4);
    }
    std::memset(buf + ((bn + 7) & ~7u), 0, 8);
    pack_codes(buf, bn, bits, out + 4 + size_t(b0) * bits / 8);
  }
  return true;
}

KVTC_AVX2 bool dequantize_group_avx2(const uint8_t* in, uint32_t size, uint32_t bits, float* x) {
  const float shift = f16_to_f32(uint16_t(in[0] | (in[1] << 8)));
  const float scale = f16_to_f32(uint16_t(in[2] | (in[3] << 8)));
  if (!unpackable(bits) || !finite_f32(shift) || !finite_f32(scale)) return false;
  in += 4;
  const uint32_t nbytes = packed_bytes(size, bits);
  const UnpackCtl u = unpack_ctl(bits);  // lanes 0..7 of it: one chunk is 8 codes here
  const __m256i sel = _mm256_load_si256(reinterpret_cast<const __m256i*>(u.shuffle));
  const __m256i shifts = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(u.shift));
  const __m256i mask = _mm256_set1_epi32(int((1u << bits) - 1));
  const __m256 sh = _mm256_set1_ps(shift), sc = _mm256_set1_ps(scale);
  for (uint32_t i = 0; i < size; i += 8) {
    // 8 codes take `bits` <= 8 bytes; near the group's end only the bytes it has are read.
    const uint32_t o = i * bits / 8, left = nbytes - o;
    uint64_t w = 0;
    if (left >= 8) {
      std::memcpy(&w, in + o, 8);
    } else {
      for (uint32_t j = 0; j < left; j++) w |= uint64_t(in[o + j]) << (8 * j);
    }
    const __m128i src = _mm_cvtsi64_si128(int64_t(w));
    __m256i c = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(src), sel);
    c = _mm256_and_si256(_mm256_srlv_epi32(c, shifts), mask);
    __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(c), sc);
    KVTC_OPAQUE(p);
    const __m256 r = _mm256_add_ps(sh, p);
    if (size - i >= 8) _mm256_storeu_ps(x + i, r);
    else _mm256_maskstore_ps(x + i, tail_mask8(size - i), r);
  }
  return true;
}

KVTC_AVX2 bool group_sq_error_avx2(const float* d, uint32_t size, uint32_t bits, double& err) {
  float mn, mx;
  if (!minmax_avx2(d, size, mn, mx)) return false;
  const GroupParams g = group_params_minmax(mn, mx, bits);
  if (!vector_safe(mn, mx, g)) return false;
  const __m256 sh = _mm256_set1_ps(g.shift), inv = _mm256_set1_ps(g.inv_scale), sc = _mm256_set1_ps(g.scale),
               top = _mm256_set1_ps(float((1u << bits) - 1));
  double acc = 0;
  alignas(32) double e2[8];
  for (uint32_t i = 0; i < size; i += 8) {
    const __m256 v = load8(d + i, size - i);
    __m256i c;
    if (!codes8(v, sh, inv, top, c)) return false;
    __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(c), sc);
    KVTC_OPAQUE(p);
    const __m256 r = _mm256_add_ps(sh, p);
    for (int h = 0; h < 2; h++) {
      const __m128 vh = h ? _mm256_extractf128_ps(v, 1) : _mm256_castps256_ps128(v);
      const __m128 rh = h ? _mm256_extractf128_ps(r, 1) : _mm256_castps256_ps128(r);
      const __m256d e = _mm256_sub_pd(_mm256_cvtps_pd(vh), _mm256_cvtps_pd(rh));
      __m256d s = _mm256_mul_pd(e, e);
      KVTC_OPAQUE(s);
      _mm256_store_pd(e2 + 4 * h, s);
    }
    const uint32_t nv = std::min<uint32_t>(8, size - i);
    for (uint32_t j = 0; j < nv; j++) acc += e2[j];  // in index order, as the scalar sum
  }
  err = acc;
  return true;
}

// ---- AVX-512 ------------------------------------------------------------------------------

KVTC_AVX512 inline __mmask16 tail_mask16(uint32_t left) {
  return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
}

KVTC_AVX512 bool minmax_avx512(const float* x, uint32_t size, float& mn, float& mx) {
  const __m512 first = _mm512_set1_ps(x[0]);
  __m512 vmn = first, vmx = first;
  __mmask16 nan = 0;
  for (uint32_t i = 0; i < size; i += 16) {
    const __m512 v = _mm512_mask_loadu_ps(first, tail_mask16(size - i), x + i);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    vmn = _mm512_min_ps(vmn, v);
    vmx = _mm512_max_ps(vmx, v);
  }
  mn = _mm512_reduce_min_ps(vmn);
  mx = _mm512_reduce_max_ps(vmx);
  return nan == 0;
}

KVTC_AVX512 inline bool codes16(__m512 v, __m512 sh, __m512 inv, __m512 top, __mmask16 m, __m512i& c) {
  const __m512 t = _mm512_mul_ps(_mm512_sub_ps(v, sh), inv);
  const __m512 q = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if (_mm512_mask_cmp_ps_mask(m, q, q, _CMP_UNORD_Q)) return false;
  c = _mm512_maskz_cvttps_epi32(m, _mm512_min_ps(_mm512_max_ps(q, _mm512_setzero_ps()), top));
  return true;
}

KVTC_AVX512 bool quantize_group_avx512(const float* x, uint32_t size, uint32_t bits, uint8_t* out) {
  float mn, mx;
  if (!minmax_avx512(x, size, mn, mx)) return false;
  const GroupParams g = group_params_minmax(mn, mx, bits);
  if (!vector_safe(mn, mx, g)) return false;
  out[0] = uint8_t(g.shift_h);
  out[1] = uint8_t(g.shift_h >> 8);
  out[2] = uint8_t(g.scale_h);
  out[3] = uint8_t(g.scale_h >> 8);
  const __m512 sh = _mm512_set1_ps(g.shift), inv = _mm512_set1_ps(g.inv_scale),
               top = _mm512_set1_ps(float((1u << bits) - 1));
  alignas(64) uint8_t buf[kBlock + 16];
  for (uint32_t b0 = 0; b0 < size; b0 += kBlock) {
    const uint32_t bn = std::min(kBlock, size - b0);
    for (uint32_t i = 0; i < bn; i += 16) {
      const __mmask16 m = tail_mask16(bn - i);
      __m512i c;
      if (!codes16(_mm512_maskz_loadu_ps(m, x + b0 + i), sh, inv, top, m, c)) return false;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(buf + i), _mm512_cvtepi32_epi8(c));
    }
    pack_codes(buf, bn, bits, out + 4 + size_t(b0) * bits / 8);
  }
  return true;
}

KVTC_AVX512 bool dequantize_group_avx512(const uint8_t* in, uint32_t size, uint32_t bits, float* x) {
  const float shift = f16_to_f32(uint16_t(in[0] | (in[1] << 8)));
  const float scale = f16_to_f32(uint16_t(in[2] | (in[3] << 8)));
  if (!unpackable(bits) || !finite_f32(shift) || !finite_f32(scale)) return false;
  in += 4;
  const uint32_t nbytes = packed_bytes(size, bits), per = 2 * bits;  // bytes per 16 codes
  const UnpackCtl u = unpack_ctl(bits);
  const __m512i sel = _mm512_load_si512(u.shuffle);
  const __m512i shifts = _mm512_load_si512(u.shift);
  const __m512i mask = _mm512_set1_epi32(int((1u << bits) - 1));
  const __m512 sh = _mm512_set1_ps(shift), sc = _mm512_set1_ps(scale);
  for (uint32_t i = 0; i < size; i += 16) {
    const uint32_t o = i * bits / 8, take = std::min(per, nbytes - o);
    const __m128i src = _mm_maskz_loadu_epi8(__mmask16((1u << take) - 1), in + o);
    __m512i c = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(src), sel);
    c = _mm512_and_si512(_mm512_srlv_epi32(c, shifts), mask);
    __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(c), sc);
    KVTC_OPAQUE(p);
    _mm512_mask_storeu_ps(x + i, tail_mask16(size - i), _mm512_add_ps(sh, p));
  }
  return true;
}

KVTC_AVX512 bool group_sq_error_avx512(const float* d, uint32_t size, uint32_t bits, double& err) {
  float mn, mx;
  if (!minmax_avx512(d, size, mn, mx)) return false;
  const GroupParams g = group_params_minmax(mn, mx, bits);
  if (!vector_safe(mn, mx, g)) return false;
  const __m512 sh = _mm512_set1_ps(g.shift), inv = _mm512_set1_ps(g.inv_scale), sc = _mm512_set1_ps(g.scale),
               top = _mm512_set1_ps(float((1u << bits) - 1));
  double acc = 0;
  alignas(64) double e2[16];
  for (uint32_t i = 0; i < size; i += 16) {
    const __mmask16 m = tail_mask16(size - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, d + i);
    __m512i c;
    if (!codes16(v, sh, inv, top, m, c)) return false;
    __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(c), sc);
    KVTC_OPAQUE(p);
    const __m512 r = _mm512_add_ps(sh, p);
    const __m512d lo = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), _mm512_cvtps_pd(_mm512_castps512_ps256(r)));
    const __m512d hi = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(r, 1)));
    __m512d slo = _mm512_mul_pd(lo, lo), shi = _mm512_mul_pd(hi, hi);
    KVTC_OPAQUE(slo);
    KVTC_OPAQUE(shi);
    _mm512_store_pd(e2, slo);
    _mm512_store_pd(e2 + 8, shi);
    const uint32_t nv = std::min<uint32_t>(16, size - i);
    for (uint32_t j = 0; j < nv; j++) acc += e2[j];  // in index order, as the scalar sum
  }
  err = acc;
  return true;
}
#endif  // KVTC_X86

inline void quantize_group_on(SimdPath p, const float* x, uint32_t size, uint32_t bits, uint8_t* out) {
#if KVTC_X86
  if (p == SimdPath::Avx512 && quantize_group_avx512(x, size, bits, out)) return;
  if (p == SimdPath::Avx2 && quantize_group_avx2(x, size, bits, out)) return;
#endif
  quantize_group_scalar(x, size, bits, out);
}

inline void dequantize_group_on(SimdPath p, const uint8_t* in, uint32_t size, uint32_t bits, float* x) {
#if KVTC_X86
  if (p == SimdPath::Avx512 && dequantize_group_avx512(in, size, bits, x)) return;
  if (p == SimdPath::Avx2 && dequantize_group_avx2(in, size, bits, x)) return;
#endif
  dequantize_group_scalar(in, size, bits, x);
}

}  // namespace

void quantize_rows_path(SimdPath p, const RowLayout& layout, const float* D, size_t n, size_t ld, uint8_t* rows) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < layout.groups.size(); j++) {
      const PlanGroup& pg = layout.groups[j];
      uint8_t* out = rows + i * layout.rowBytes + layout.offset[j];
      if (pg.mode == kGroupStatic) quantize_group_static(D + i * ld + pg.start, pg.size, pg.bits, pg.shift, pg.scale, out);
      else quantize_group_on(p, D + i * ld + pg.start, pg.size, pg.bits, out);
    }
}

void dequantize_rows_path(SimdPath p, const RowLayout& layout, const uint8_t* rows, size_t n, float* D, size_t ld) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < layout.groups.size(); j++) {
      const PlanGroup& pg = layout.groups[j];
      const uint8_t* in = rows + i * layout.rowBytes + layout.offset[j];
      if (pg.mode == kGroupStatic)
        dequantize_group_static(in, pg.size, pg.bits, pg.shift, pg.scale, pg.levels.empty() ? nullptr : pg.levels.data(),
                                D + i * ld + pg.start);
      else dequantize_group_on(p, in, pg.size, pg.bits, D + i * ld + pg.start);
    }
}

void quantize_rows(const RowLayout& layout, const float* D, size_t n, size_t ld, uint8_t* rows) {
  quantize_rows_path(simd_best(), layout, D, n, ld, rows);
}
void dequantize_rows(const RowLayout& layout, const uint8_t* rows, size_t n, float* D, size_t ld) {
  dequantize_rows_path(simd_best(), layout, rows, n, D, ld);
}
void quantize_row_path(SimdPath p, const RowLayout& layout, const float* d, uint8_t* row) {
  quantize_rows_path(p, layout, d, 1, layout.k, row);
}
void dequantize_row_path(SimdPath p, const RowLayout& layout, const uint8_t* row, float* d) {
  dequantize_rows_path(p, layout, row, 1, d, layout.k);
}
void quantize_row(const RowLayout& layout, const float* d, uint8_t* row) { quantize_row_path(simd_best(), layout, d, row); }
void dequantize_row(const RowLayout& layout, const uint8_t* row, float* d) {
  dequantize_row_path(simd_best(), layout, row, d);
}

double group_sq_error_path(SimdPath p, const float* d, uint32_t size, uint32_t bits) {
#if KVTC_X86
  double err;
  if (p == SimdPath::Avx512 && group_sq_error_avx512(d, size, bits, err)) return err;
  if (p == SimdPath::Avx2 && group_sq_error_avx2(d, size, bits, err)) return err;
#endif
  return group_sq_error_scalar(d, size, bits);
}

double group_sq_error(const float* d, uint32_t size, uint32_t bits) { return group_sq_error_path(simd_best(), d, size, bits); }

}  // namespace kvtc
