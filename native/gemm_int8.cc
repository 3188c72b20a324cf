#include "gemm_int8.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cpu_dispatch.h"
#include "errors.h"
#include "half.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvtc {
namespace {

bool has_vnni() {
#if defined(__x86_64__)
  static const bool v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni");
  return v;
#else
  return false;
#endif
}

// Codes of one plan group as bytes (LSB-first packing, as quantize_group writes them), then
// zeros up to the group's whole quads.
void unpack_codes(const uint8_t* in, uint32_t size, uint32_t bits, uint8_t* out, uint32_t padded) {
  if (bits == 8) {
    std::memcpy(out, in, size);
  } else if (bits == 4) {
    for (uint32_t i = 0; i < size; i += 2) {
      out[i] = in[i / 2] & 15;
      if (i + 1 < size) out[i + 1] = in[i / 2] >> 4;
    }
  } else if (bits == 2) {
    for (uint32_t i = 0; i < size; i++) out[i] = (in[i / 4] >> (2 * (i % 4))) & 3;
  } else {
    for_each_code(in, size, bits, [&](uint32_t i, uint32_t c) { out[i] = uint8_t(c); });
  }
  std::memset(out + size, 0, padded - size);
}

#if defined(__x86_64__)
// unpack_codes, 16 codes per step for the widths plans use most (4 and 2 bits: every 16 codes
// start on a byte), the rest by the scalar code. Only the VNNI path calls it.
__attribute__((target("avx512f,avx512vnni"))) void unpack_codes_simd(const uint8_t* in, uint32_t size, uint32_t bits,
                                                                     uint8_t* out, uint32_t padded) {
  uint32_t i = 0;
  if (bits == 4) {
    const __m128i lo = _mm_set1_epi16(0x000f), hi = _mm_set1_epi16(0x0f00);
    for (; i + 16 <= size; i += 16) {  // byte b -> codes (b & 15, b >> 4)
      const __m128i w = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + i / 2)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                       _mm_or_si128(_mm_and_si128(w, lo), _mm_and_si128(_mm_slli_epi16(w, 4), hi)));
    }
  } else if (bits == 2) {
    for (; i + 16 <= size; i += 16) {  // byte b -> codes (b & 3, b >> 2 & 3, b >> 4 & 3, b >> 6)
      int32_t b4;
      std::memcpy(&b4, in + i / 4, 4);
      const __m128i w = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(b4));
      const __m128i r = _mm_or_si128(
          _mm_or_si128(_mm_and_si128(w, _mm_set1_epi32(0x3)), _mm_and_si128(_mm_slli_epi32(w, 6), _mm_set1_epi32(0x300))),
          _mm_or_si128(_mm_and_si128(_mm_slli_epi32(w, 12), _mm_set1_epi32(0x30000)),
                       _mm_and_si128(_mm_slli_epi32(w, 18), _mm_set1_epi32(0x3000000))));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), r);
    }
  }
  unpack_codes(in + i * bits / 8, size - i, bits, out + i, padded - i);
}

// MR tokens x NV panels of 16 columns. Per plan group: int32 sums of codes x int8 basis
// (vpdpbusd: 4 components per step), then f += scale·sum + shift·colsum (a residual part has no
// shift term: its colsum is 0); at the end X = f·col_scale + mean.
template <int MR, int NV>
__attribute__((target("avx512f,avx512vnni"))) void tile_int8(int G, const int* gq, const uint8_t* res,
                                                             const uint8_t* U, size_t ldu, const float* SS,
                                                             size_t ldss, const int8_t* Bp, size_t pstride,
                                                             const float* colsum, size_t ldcs, const float* cscale,
                                                             const float* mean, float* X, size_t ldx,
                                                             __mmask16 last) {
  __m512 f[MR][NV];
#pragma GCC unroll 4
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) f[r][v] = _mm512_setzero_ps();
  int q0 = 0;
  for (int g = 0; g < G; g++) {
    __m512i acc[MR][NV];
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_si512();
    for (int q = q0; q < q0 + gq[g]; q++) {
      __m512i b[NV];
#pragma GCC unroll 3
      for (int v = 0; v < NV; v++) b[v] = _mm512_load_si512(Bp + v * pstride + size_t(q) * 64);
#pragma GCC unroll 4
      for (int r = 0; r < MR; r++) {
        int32_t w;
        std::memcpy(&w, U + r * ldu + size_t(q) * 4, 4);
        const __m512i a = _mm512_set1_epi32(w);
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], a, b[v]);
      }
    }
    q0 += gq[g];
    __m512 cs[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) cs[v] = _mm512_loadu_ps(colsum + g * ldcs + v * 16);
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
      const __m512 sh = _mm512_set1_ps(SS[r * ldss + 2 * g]), sc = _mm512_set1_ps(SS[r * ldss + 2 * g + 1]);
#pragma GCC unroll 3
      for (int v = 0; v < NV; v++) {
        f[r][v] = _mm512_fmadd_ps(sc, _mm512_maskz_cvtepi32_ps(0xffff, acc[r][v]), f[r][v]);  // (maskz: GCC 12 warns in the plain one)
        if (!res[g]) f[r][v] = _mm512_fmadd_ps(sh, cs[v], f[r][v]);
      }
    }
  }
#pragma GCC unroll 3
  for (int v = 0; v < NV; v++) {
    const __mmask16 mk = v == NV - 1 ? last : __mmask16(0xffff);
    const __m512 s = _mm512_loadu_ps(cscale + v * 16), m = _mm512_maskz_loadu_ps(mk, mean + v * 16);
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) _mm512_mask_storeu_ps(X + r * ldx + v * 16, mk, _mm512_fmadd_ps(f[r][v], s, m));
  }
}

__attribute__((target("avx512f,avx512vnni"))) __attribute__((noinline)) double peak_vnni(int64_t iterations) {
  __m512i acc[12];
  for (int r = 0; r < 12; r++) acc[r] = _mm512_set1_epi32(r);
  const __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x7f01ff02);
  for (int64_t i = 0; i < iterations; i++) {
#pragma GCC unroll 12
    for (int r = 0; r < 12; r++) acc[r] = _mm512_dpbusd_epi32(acc[r], a, b);
  }
  __m512i s = acc[0];
  for (int r = 1; r < 12; r++) s = _mm512_add_epi32(s, acc[r]);
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, s);
  volatile int32_t sink = lanes[0];
  (void)sink;
  return 2.0 * 64 * 12 * double(iterations);
}

using TileInt8 = void (*)(int, const int*, const uint8_t*, const uint8_t*, size_t, const float*, size_t, const int8_t*, size_t,
                          const float*, size_t, const float*, const float*, float*, size_t, __mmask16);
#define KVTC_TI8(mr) {tile_int8<mr, 1>, tile_int8<mr, 2>, tile_int8<mr, 3>}
constexpr TileInt8 kTilesInt8[4][3] = {KVTC_TI8(1), KVTC_TI8(2), KVTC_TI8(3), KVTC_TI8(4)};
#undef KVTC_TI8
#endif

}  // namespace

Int8Basis make_int8_basis(const RowLayout& layout, const float* basis, int k, int p, uint32_t residual_bits) {
  Int8Basis b;
  b.p = p;
  const size_t G = layout.groups.size();
  b.group_quad.assign(G, 0);
  b.group_lut.assign(G, -1);
  // Main terms: each group's quads in plan order; runs of them become the parts.
  struct Run {
    Int8Part part;
    bool levels = false;
    float lo = 0, hi = 0;  // smallest and largest per-quad level range in a level run
  };
  std::vector<Run> runs;
  std::vector<int> quad_comp;  // per main quad row (4 per quad): its component, or -1 (padding)
  int q = 0;
  for (size_t g = 0; g < G; g++) {
    const PlanGroup& pg = layout.groups[g];
    const bool is_static = pg.mode == kGroupStatic, levels = is_static && !pg.levels.empty();
    const bool residual = pg.bits >= residual_bits;
    const int quads = int((pg.size + 3) / 4);
    b.group_quad[g] = q;
    for (int i = 0; i < 4 * quads; i++) quad_comp.push_back(i < int(pg.size) ? int(pg.start) + i : -1);
    if (!levels) {
      Run r;
      r.part.quad = q;
      r.part.quads = quads;
      r.part.residual = residual;
      r.part.row_group = is_static ? -1 : int(g);
      r.part.shift = is_static ? pg.shift : 0.0f;
      r.part.scale = is_static ? pg.scale : 0.0f;
      runs.push_back(r);
      q += quads;
      continue;
    }
    const uint32_t L = 1u << pg.bits;
    for (int j = 0; j < quads; j++, q++) {
      float m = 0;  // the quad's level range
      for (uint32_t i = 4 * j; i < std::min(pg.size, uint32_t(4 * j + 4)); i++)
        for (uint32_t c = 0; c < L; c++) m = std::max(m, std::fabs(pg.levels[(i << pg.bits) + c]));
      Run* r = runs.empty() ? nullptr : &runs.back();
      if (r && r->levels && r->part.residual == residual && std::max(r->hi, m) <= 2 * std::min(r->lo, m)) {
        r->part.quads++;
        r->lo = std::min(r->lo, m);
        r->hi = std::max(r->hi, m);
      } else {
        Run n;
        n.levels = true;
        n.lo = n.hi = m;
        n.part.quad = q;
        n.part.quads = 1;
        n.part.residual = residual;
        runs.push_back(n);
      }
    }
  }
  // Level runs: their scale, and the tables of their groups' components.
  std::vector<float> quad_scale(size_t(q), 0.0f);
  for (Run& r : runs) {
    if (!r.levels) continue;
    r.part.scale = r.hi > 0 ? r.hi / 127.0f : 1.0f;
    r.part.shift = -128.0f * r.part.scale;
    for (int j = r.part.quad; j < r.part.quad + r.part.quads; j++) quad_scale[j] = r.part.scale;
  }
  for (size_t g = 0; g < G; g++) {
    const PlanGroup& pg = layout.groups[g];
    if (pg.mode != kGroupStatic || pg.levels.empty()) continue;
    b.group_lut[g] = int64_t(b.lut.size());
    for (uint32_t i = 0; i < pg.size; i++) {
      const float s = quad_scale[b.group_quad[g] + i / 4];
      for (uint32_t c = 0; c < (1u << pg.bits); c++)
        b.lut.push_back(uint8_t(int(std::nearbyint(pg.levels[(i << pg.bits) + c] / s)) + 128));
    }
  }
  // Parts: the main terms, then a residual term for each run that has one (the same codes).
  for (const Run& r : runs) {
    Int8Part t = r.part;
    t.residual = false;
    b.parts.push_back(t);
  }
  for (const Run& r : runs) {
    if (!r.part.residual) continue;
    Int8Part t = r.part;
    t.copy_from = r.part.quad;
    t.quad = q;
    t.shift = 0.0f;
    if (t.row_group < 0) t.scale = r.part.scale / 127.0f;
    b.parts.push_back(t);
    q += t.quads;
  }
  b.quads = q;
  for (const Int8Part& t : b.parts) {
    b.part_quads.push_back(t.quads);
    b.part_no_shift.push_back(uint8_t(t.residual));
  }
  const int parts = int(b.parts.size());
  const int np = b.panels(), pw = np * 16;
  b.col_scale.assign(pw, 1.0f);
  for (int j = 0; j < p; j++) {
    float mx = 0;
    for (int c = 0; c < k; c++) mx = std::max(mx, std::fabs(basis[size_t(c) * p + j]));
    if (mx > 0) b.col_scale[j] = mx / 127.0f;
  }
  b.colsum.assign(size_t(std::max(parts, 1)) * pw, 0.0f);
  const size_t bytes = std::max<size_t>(64, size_t(np) * b.quads * 64);
  int8_t* d = static_cast<int8_t*>(std::aligned_alloc(64, bytes));
  if (!d) fail("E_CAPACITY", "cannot allocate the int8 basis");
  std::memset(d, 0, bytes);
  auto clamp8 = [](float v) { return int8_t(std::max(-127.0f, std::min(127.0f, v))); };
  for (int t = 0; t < parts; t++) {
    const Int8Part& pt = b.parts[t];
    const int src = pt.residual ? pt.copy_from : pt.quad;  // the main quads whose components these rows hold
    for (int j = 0; j < p; j++) {
      double s = 0;
      for (int i = 0; i < 4 * pt.quads; i++) {
        const int c = quad_comp[size_t(src) * 4 + i];
        if (c < 0) continue;
        const float x = basis[size_t(c) * p + j] / b.col_scale[j];
        const float hi = std::nearbyint(x);
        s += x;
        // The residual part holds 127 x what the first one left over (|x - hi| <= 1/2).
        const float v = pt.residual ? std::nearbyint((x - hi) * 127.0f) : hi;
        d[(size_t(j / 16) * b.quads + pt.quad + i / 4) * 64 + (j % 16) * 4 + i % 4] = clamp8(v);
      }
      if (!pt.residual) b.colsum[size_t(t) * pw + j] = float(s);
    }
  }
  b.data = std::shared_ptr<const int8_t>(d, std::free);
  return b;
}

double int8_peak_loop(int64_t iterations) {
#if defined(__x86_64__)
  if (has_vnni()) return peak_vnni(iterations);
#endif
  (void)iterations;
  fail("E_OPTIONS", "the int8 peak loop needs AVX-512 VNNI");
}

namespace {
// KVTC_DECODE, read once: whether int8 is on, whether asked for by name, or why the value is invalid.
struct Int8Choice {
  bool int8 = false, forced = false;
  std::string error;
};

const Int8Choice& int8_choice() {
  static const Int8Choice choice = [] {
    Int8Choice c;
    const char* env = std::getenv("KVTC_DECODE");
    // Default: int8 where the CPU has it and the codec runs its AVX-512 path (KVTC_SIMD may
    // select a narrower one, and the default never runs AVX-512 kernels behind it).
    if (!env || !*env) {
      c.int8 = has_vnni() && simd_best() == SimdPath::Avx512;
      return c;
    }
    if (std::strcmp(env, "f32") == 0) return c;
    if (std::strcmp(env, "int8") != 0)
      c.error = std::string("KVTC_DECODE must be f32 or int8, got '") + env + "'";
    else if (!has_vnni())
      c.error = "KVTC_DECODE=int8 needs a CPU with AVX-512 VNNI";
    else if (simd_best() != SimdPath::Avx512)  // KVTC_SIMD forced a narrower path: no AVX-512 behind its back
      c.error = std::string("KVTC_DECODE=int8 runs on the avx512 path only, and KVTC_SIMD selects ") +
                simd_name(simd_best());
    else
      c.int8 = c.forced = true;
    return c;
  }();
  if (!choice.error.empty()) fail("E_OPTIONS", choice.error);
  return choice;
}
}  // namespace

bool int8_decode_selected() {
  return int8_choice().int8;
}

bool int8_decode_for(double ratio) {
  try {
    const Int8Choice& c = int8_choice();
    return c.int8 && (c.forced || ratio >= kInt8DefaultMinRatio);
  } catch (const KvtcException&) {
    return false;
  }
}

void decode_rows_int8(const RowLayout& layout, const Int8Basis& b, const float* mean, const uint8_t* rows, int nb,
                      float* X, int ldx, std::vector<uint8_t>& scratch) {
#if defined(__x86_64__)
  const int G = int(b.parts.size());
  const size_t ldu = (size_t(b.quads) * 4 + 63) / 64 * 64, ldss = 2 * size_t(G);
  scratch.resize(size_t(nb) * ldu + size_t(nb) * ldss * sizeof(float) + 64);
  uint8_t* U = scratch.data();
  float* SS = reinterpret_cast<float*>(scratch.data() + (size_t(nb) * ldu + 63) / 64 * 64);
  for (int t = 0; t < nb; t++) {
    const uint8_t* row = rows + size_t(t) * layout.rowBytes;
    uint8_t* u = U + t * ldu;
    float* ss = SS + t * ldss;
    for (size_t g = 0; g < layout.groups.size(); g++) {
      const PlanGroup& pg = layout.groups[g];
      uint8_t* block = u + size_t(b.group_quad[g]) * 4;
      unpack_codes_simd(row + layout.offset[g] + group_header_bytes(pg.mode), pg.size, pg.bits, block,
                        (pg.size + 3) / 4 * 4);
      if (b.group_lut[g] >= 0) {  // code c of component i -> its level's byte
        const uint8_t* lut = b.lut.data() + b.group_lut[g];
        for (uint32_t i = 0; i < pg.size; i++) block[i] = lut[(i << pg.bits) + block[i]];
      }
    }
    for (int q = 0; q < G; q++) {
      const Int8Part& pt = b.parts[q];
      if (pt.residual) std::memcpy(u + size_t(pt.quad) * 4, u + size_t(pt.copy_from) * 4, size_t(pt.quads) * 4);
      if (pt.row_group < 0) {
        ss[2 * q] = pt.shift;
        ss[2 * q + 1] = pt.scale;
      } else {
        const uint8_t* in = row + layout.offset[pt.row_group];
        const float scale = f16_to_f32(uint16_t(in[2] | (in[3] << 8)));
        ss[2 * q] = pt.residual ? 0.0f : f16_to_f32(uint16_t(in[0] | (in[1] << 8)));
        ss[2 * q + 1] = pt.residual ? scale / 127.0f : scale;
      }
    }
  }
  const int np = b.panels(), pw = np * 16;
  const size_t pstride = size_t(b.quads) * 64;
  for (int j = 0; j < np; j += 3) {
    const int nv = std::min(3, np - j);
    const int last_cols = std::min(nv * 16, b.p - j * 16) - (nv - 1) * 16;
    const __mmask16 last = __mmask16((1u << last_cols) - 1);
    for (int i = 0; i < nb; i += 4) {
      const int mr = std::min(4, nb - i);
      kTilesInt8[mr - 1][nv - 1](G, b.part_quads.data(), b.part_no_shift.data(), U + i * ldu, ldu, SS + i * ldss, ldss,
                                 b.data.get() + size_t(j) * pstride, pstride, b.colsum.data() + j * 16, size_t(pw),
                                 b.col_scale.data() + j * 16, mean + j * 16, X + size_t(i) * ldx + j * 16, size_t(ldx),
                                 last);
    }
  }
#else
  fail("E_OPTIONS", "the int8 decode path needs AVX-512 VNNI");
#endif
}

}  // namespace kvtc
