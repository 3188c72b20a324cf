// Per-token, per-group min/max uniform quantization of PCA coefficients and the byte layout of a
// quantized token row. Each coded group of a row is [shift f16][scale f16][packed codes], codes
// packed LSB-first and padded to a whole byte, so every group starts on a byte boundary and the
// entropy coder can give each byte a context by its position in the row.
//
// A static group (profile version 2) has no per-token shift and scale: calibration fixed them
// (a uniform step for the group's spread at its width, codes clamped), so its row part is the
// packed codes alone — at small budgets the 32 bits a min/max group pays per token dominate.
//
// A static group of at most kMaxLevelBits (profile version 3) may also carry reconstruction
// levels: per component, the value each code decodes to — the mean of the calibration values
// that fall in the code's bin, which has less squared error than the bin's midpoint at the same
// codes and rate (the outer bins of a coarse quantizer most). Codes are computed as before, so
// the encoder and the blob are unchanged; only the decoder's table differs.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu_dispatch.h"
#include "half.h"
#include "hd.h"

namespace kvtc {

enum : uint8_t { kGroupMinMax = 0, kGroupStatic = 1 };

// Widest static group that carries reconstruction levels (2^4 = 16 floats per component: at
// most 16 per kept component, small beside the basis's p; at finer steps a bin's mean is its
// midpoint to within a small fraction of the step, and levels would buy nothing).
constexpr uint32_t kMaxLevelBits = 4;

struct PlanGroup {
  uint32_t start = 0;  // first principal component of the group
  uint32_t size = 0;   // number of components
  uint8_t bits = 0;    // code width (> 0; dropped components are simply not in the plan)
  uint8_t mode = kGroupMinMax;
  float shift = 0, scale = 0;  // static groups: value = shift + code * scale (scale > 0)
  // Static groups of bits <= kMaxLevelBits: size << bits floats, the value code c of component j
  // decodes to at levels[(j << bits) + c]; empty: shift + code * scale.
  std::vector<float> levels{};
};

// Bytes of a group's per-token header: fp16 shift and scale, none for a static group.
KVTC_HD uint32_t group_header_bytes(uint8_t mode) { return mode == kGroupStatic ? 0u : 4u; }

// Entropy-coding contexts per group: a min/max group's are shift lo/hi byte, scale lo/hi byte,
// code bytes. A static group has no header bytes: its code bytes 0..3 take the first four
// (components of one group differ in variance, so their bytes' histograms differ) and bytes 4 on
// share the fifth (profile version 3; before, all its bytes shared the fifth).
constexpr int kContextsPerGroup = 5;

// The context, within its group's kContextsPerGroup, of code byte b of a group.
KVTC_HD uint32_t code_context(uint8_t mode, uint32_t b, bool static_byte_contexts) {
  return mode == kGroupStatic && static_byte_contexts ? (b < 4 ? b : 4u) : 4u;
}

struct RowLayout {
  std::vector<PlanGroup> groups;
  std::vector<uint32_t> offset;   // byte offset of each group in a row
  std::vector<uint16_t> context;  // context id of every byte of a row (rowBytes entries)
  uint32_t k = 0;                 // coefficients needed: end of the last group
  uint32_t rowBytes = 0;
  uint32_t numContexts() const { return uint32_t(groups.size()) * kContextsPerGroup; }
};

// Bytes of packed codes for a group: ceil(size*bits/8).
inline uint32_t packed_bytes(uint32_t size, uint32_t bits) { return (size * bits + 7) / 8; }

// Bits a group costs per token, fp16 shift and scale included (none for a static group).
inline uint32_t group_cost_bits(uint32_t size, uint32_t bits, uint8_t mode = kGroupMinMax) {
  return 8 * packed_bytes(size, bits) + 8 * group_header_bytes(mode);
}

// One group's quantization parameters. The fp16-rounded shift and scale are what the decoder
// sees, so the encoder quantizes against exactly those values.
struct GroupParams {
  uint16_t shift_h, scale_h;
  float shift, inv_scale, scale;
};

// The parameters of a group whose smallest value is mn and largest mx (as group_params finds them).
KVTC_HD GroupParams group_params_minmax(float mn, float mx, uint32_t bits) {
  GroupParams g;
  g.shift_h = f32_to_f16(mn);
  g.shift = f16_to_f32(g.shift_h);
  const float levels = float((1u << bits) - 1);
  g.scale_h = f32_to_f16((mx - g.shift) / levels);
  g.scale = f16_to_f32(g.scale_h);
  g.inv_scale = g.scale > 0 ? 1.0f / g.scale : 0.0f;
  return g;
}

KVTC_HD GroupParams group_params(const float* d, uint32_t size, uint32_t bits) {
  float mn = d[0], mx = d[0];
  for (uint32_t i = 1; i < size; i++) {
    mn = d[i] < mn ? d[i] : mn;
    mx = d[i] > mx ? d[i] : mx;
  }
  return group_params_minmax(mn, mx, bits);
}

KVTC_HD uint32_t code_of(float x, const GroupParams& g, uint32_t maxq) {
  const float q = rintf((x - g.shift) * g.inv_scale);  // round half to even, as nearbyint
  return q <= 0.0f ? 0u : (q >= float(maxq) ? maxq : uint32_t(q));
}

// Packs `size` codes of `bits` bits (code(i) for i in [0, size)) little-endian into out.
template <class Code>
KVTC_HD void pack_codes(uint32_t size, uint32_t bits, uint8_t* out, Code code) {
  uint64_t acc = 0;
  uint32_t nacc = 0;
  for (uint32_t i = 0; i < size; i++) {
    acc |= uint64_t(code(i)) << nacc;
    nacc += bits;
    while (nacc >= 8) {
      *out++ = uint8_t(acc);
      acc >>= 8;
      nacc -= 8;
    }
  }
  if (nacc > 0) *out = uint8_t(acc);
}

// The inverse of pack_codes: calls put(i, code) for the `size` codes of `bits` bits in `in`.
template <class Put>
KVTC_HD void for_each_code(const uint8_t* in, uint32_t size, uint32_t bits, Put put) {
  const uint32_t mask = (1u << bits) - 1;
  uint64_t acc = 0;
  uint32_t nacc = 0;
  for (uint32_t i = 0; i < size; i++) {
    while (nacc < bits) {
      acc |= uint64_t(*in++) << nacc;
      nacc += 8;
    }
    put(i, uint32_t(acc) & mask);
    acc >>= bits;
    nacc -= bits;
  }
}

// Each code c of a packed group reconstructed as shift + c * scale into x.
KVTC_HD void dequantize_codes(const uint8_t* in, uint32_t size, uint32_t bits, float shift, float scale, float* x) {
  for_each_code(in, size, bits, [&](uint32_t i, uint32_t c) { x[i] = shift + float(c) * scale; });
}

// Quantizes one group of `size` coefficients with `bits` into out: [shift f16][scale f16][codes].
KVTC_HD void quantize_group(const float* x, uint32_t size, uint32_t bits, uint8_t* out) {
  const GroupParams g = group_params(x, size, bits);
  out[0] = uint8_t(g.shift_h);
  out[1] = uint8_t(g.shift_h >> 8);
  out[2] = uint8_t(g.scale_h);
  out[3] = uint8_t(g.scale_h >> 8);
  out += 4;
  const uint32_t maxq = (1u << bits) - 1;
  if (bits == 8) {
    for (uint32_t i = 0; i < size; i++) out[i] = uint8_t(code_of(x[i], g, maxq));
    return;
  }
  pack_codes(size, bits, out, [&](uint32_t i) { return code_of(x[i], g, maxq); });
}

// Packs codes of a static group (no header): code = clamp(rint((x - shift) / scale)).
KVTC_HD void quantize_group_static(const float* x, uint32_t size, uint32_t bits, float shift, float scale,
                                   uint8_t* out) {
  GroupParams g;
  g.shift = shift;
  g.scale = scale;
  g.inv_scale = scale > 0 ? 1.0f / scale : 0.0f;
  const uint32_t maxq = (1u << bits) - 1;
  // A NaN codes as 0 (escaped tokens never get here; the zeros that stand in for them do).
  pack_codes(size, bits, out, [&](uint32_t i) { return x[i] == x[i] ? code_of(x[i], g, maxq) : 0u; });
}

// Reconstructs a static group: levels (size << bits floats, borrowed; see PlanGroup) or, when
// null, shift + code * scale.
KVTC_HD void dequantize_group_static(const uint8_t* in, uint32_t size, uint32_t bits, float shift, float scale,
                                     const float* levels, float* x) {
  if (!levels) {
    dequantize_codes(in, size, bits, shift, scale, x);
    return;
  }
  for_each_code(in, size, bits, [&](uint32_t i, uint32_t c) { x[i] = levels[(i << bits) + c]; });
}

// Reconstructs one group's `size` coefficients from its bytes (the inverse of quantize_group).
KVTC_HD void dequantize_group(const uint8_t* in, uint32_t size, uint32_t bits, float* x) {
  const float shift = f16_to_f32(uint16_t(in[0] | (in[1] << 8)));
  const float scale = f16_to_f32(uint16_t(in[2] | (in[3] << 8)));
  in += 4;
  if (bits == 8) {
    for (uint32_t i = 0; i < size; i++) x[i] = shift + float(in[i]) * scale;
    return;
  }
  dequantize_codes(in, size, bits, shift, scale, x);
}

// static_byte_contexts: code_context's version-3 assignment (false: a version-2 profile's).
RowLayout make_row_layout(const std::vector<PlanGroup>& groups, bool static_byte_contexts = true);

// The CPU entry points below run the widest SIMD path the CPU has (simd_best()); the _path
// variants run a given one (tests and benchmarks; p must satisfy simd_has(p)). Every path gives
// the same bytes and floats as the scalar quantize_group / dequantize_group above: the vector
// kernels perform the same float operations in the same order (no FMA contraction), and a group
// whose min/max is a signed zero or that holds a NaN goes to the scalar code, whose order-
// dependent results a vector reduction could not reproduce.

// Quantizes the coefficients d[0..k) of one token into row[0..rowBytes).
void quantize_row(const RowLayout& layout, const float* d, uint8_t* row);
void quantize_row_path(SimdPath p, const RowLayout& layout, const float* d, uint8_t* row);

// Quantizes n tokens: coefficients of token i at D + i * ld (floats, ld >= layout.k), its row at
// rows + i * rowBytes. The batch form of quantize_row, one dispatch per call.
void quantize_rows(const RowLayout& layout, const float* D, size_t n, size_t ld, uint8_t* rows);
void quantize_rows_path(SimdPath p, const RowLayout& layout, const float* D, size_t n, size_t ld, uint8_t* rows);

// Reconstructs d[0..k) from one quantized row.
void dequantize_row(const RowLayout& layout, const uint8_t* row, float* d);
void dequantize_row_path(SimdPath p, const RowLayout& layout, const uint8_t* row, float* d);

// Reconstructs n tokens: row i at rows + i * rowBytes into D + i * ld (floats, ld >= layout.k;
// coefficients outside the plan's groups are left as they are).
void dequantize_rows(const RowLayout& layout, const uint8_t* rows, size_t n, float* D, size_t ld);
void dequantize_rows_path(SimdPath p, const RowLayout& layout, const uint8_t* rows, size_t n, float* D, size_t ld);

// Squared error of quantizing one group of `size` values with `bits` (as quantize_row would),
// summed in index order in double, so every path returns the same double.
double group_sq_error(const float* d, uint32_t size, uint32_t bits);
double group_sq_error_path(SimdPath p, const float* d, uint32_t size, uint32_t bits);

}  // namespace kvtc
