#include "rope_simd.h"

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12 reports the intrinsics' own undefined pass-through operands as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace kvtc {
namespace {

#if KVTC_X86
// fp-contract=off: GCC would otherwise fuse x0*c - x1*s into one FMA (one rounding instead of
// three) and the vector paths would no longer give the scalar code's bits. (Clang contracts only
// within one expression, never across intrinsics, and has no such attribute.)
#if defined(__clang__)
#define KVTC_NOFMA
#else
#define KVTC_NOFMA __attribute__((optimize("fp-contract=off")))
#endif

// Neox pairs (i, i + half): 16 pairs per step, the tail masked.
KVTC_AVX512 KVTC_NOFMA void neox_avx512(float* x, int half, const float* c, const float* s, float sgn) {
  const __m512 g = _mm512_set1_ps(sgn);
  for (int i = 0; i < half; i += 16) {
    const __mmask16 m = half - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (half - i)) - 1);
    const __m512 x0 = _mm512_maskz_loadu_ps(m, x + i), x1 = _mm512_maskz_loadu_ps(m, x + half + i);
    const __m512 cv = _mm512_maskz_loadu_ps(m, c + i), sv = _mm512_mul_ps(g, _mm512_maskz_loadu_ps(m, s + i));
    _mm512_mask_storeu_ps(x + i, m, _mm512_sub_ps(_mm512_mul_ps(x0, cv), _mm512_mul_ps(x1, sv)));
    _mm512_mask_storeu_ps(x + half + i, m, _mm512_add_ps(_mm512_mul_ps(x0, sv), _mm512_mul_ps(x1, cv)));
  }
}

// Interleaved pairs (2i, 2i + 1): 8 pairs per step. Even lanes get x0·c - x1·s, odd ones
// x0·s + x1·c (the scalar code's operands; a sum does not depend on its order).
KVTC_AVX512 KVTC_NOFMA void interleaved_avx512(float* x, int half, const float* c, const float* s, float sgn) {
  const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  const __m512 g = _mm512_set1_ps(sgn);
  for (int i = 0; i < half; i += 8) {
    const int n = half - i >= 8 ? 8 : half - i;
    const __mmask8 m8 = __mmask8((1u << n) - 1);
    const __mmask16 m = __mmask16((1u << (2 * n)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + 2 * i);
    const __m512 cv = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(m8, c + i)));
    const __m512 sv =
        _mm512_mul_ps(g, _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(m8, s + i))));
    const __m512 x0 = _mm512_moveldup_ps(v), x1 = _mm512_movehdup_ps(v);  // each pair's first / second, twice
    const __m512 even = _mm512_sub_ps(_mm512_mul_ps(x0, cv), _mm512_mul_ps(x1, sv));
    const __m512 odd = _mm512_add_ps(_mm512_mul_ps(x0, sv), _mm512_mul_ps(x1, cv));
    _mm512_mask_storeu_ps(x + 2 * i, m, _mm512_mask_blend_ps(__mmask16(0xaaaa), even, odd));
  }
}

KVTC_AVX2 KVTC_NOFMA void neox_avx2(float* x, int half, const float* c, const float* s, float sgn) {
  const __m256 g = _mm256_set1_ps(sgn);
  int i = 0;
  for (; i + 8 <= half; i += 8) {
    const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + half + i);
    const __m256 cv = _mm256_loadu_ps(c + i), sv = _mm256_mul_ps(g, _mm256_loadu_ps(s + i));
    _mm256_storeu_ps(x + i, _mm256_sub_ps(_mm256_mul_ps(x0, cv), _mm256_mul_ps(x1, sv)));
    _mm256_storeu_ps(x + half + i, _mm256_add_ps(_mm256_mul_ps(x0, sv), _mm256_mul_ps(x1, cv)));
  }
  for (; i < half; i++) {
    const float cc = c[i], ss = sgn * s[i], x0 = x[i], x1 = x[half + i];
    x[i] = x0 * cc - x1 * ss;
    x[half + i] = x0 * ss + x1 * cc;
  }
}

KVTC_AVX2 KVTC_NOFMA void interleaved_avx2(float* x, int half, const float* c, const float* s, float sgn) {
  const __m256i dup = _mm256_set_epi32(3, 3, 2, 2, 1, 1, 0, 0);
  const __m256 g = _mm256_set1_ps(sgn);
  int i = 0;
  for (; i + 4 <= half; i += 4) {
    const __m256 v = _mm256_loadu_ps(x + 2 * i);
    const __m256 cv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(c + i)), dup);
    const __m256 sv = _mm256_mul_ps(g, _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(s + i)), dup));
    const __m256 x0 = _mm256_moveldup_ps(v), x1 = _mm256_movehdup_ps(v);
    const __m256 even = _mm256_sub_ps(_mm256_mul_ps(x0, cv), _mm256_mul_ps(x1, sv));
    const __m256 odd = _mm256_add_ps(_mm256_mul_ps(x0, sv), _mm256_mul_ps(x1, cv));
    _mm256_storeu_ps(x + 2 * i, _mm256_blend_ps(even, odd, 0xaa));
  }
  for (; i < half; i++) {
    const float cc = c[i], ss = sgn * s[i], x0 = x[2 * i], x1 = x[2 * i + 1];
    x[2 * i] = x0 * cc - x1 * ss;
    x[2 * i + 1] = x0 * ss + x1 * cc;
  }
}
#endif

}  // namespace

void rope_rotate_row_path(SimdPath p, const RopeParams& rope, float* row, int kvHeads, int headDim, const float* cos_a,
                          const float* sin_a, bool inverse) {
  if (rope.style == RopeStyle::None) return;
#if KVTC_X86
  if (p != SimdPath::Scalar) {
    const int half = rope.dims / 2;
    const float sgn = inverse ? -1.0f : 1.0f;
    const bool neox = rope.style == RopeStyle::Neox;
    for (int h = 0; h < kvHeads; h++) {
      float* x = row + size_t(h) * headDim;
      if (p == SimdPath::Avx512)
        neox ? neox_avx512(x, half, cos_a, sin_a, sgn) : interleaved_avx512(x, half, cos_a, sin_a, sgn);
      else
        neox ? neox_avx2(x, half, cos_a, sin_a, sgn) : interleaved_avx2(x, half, cos_a, sin_a, sgn);
    }
    return;
  }
#endif
  rope_rotate_row(rope, row, kvHeads, headDim, cos_a, sin_a, inverse);
}

}  // namespace kvtc
