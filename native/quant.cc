#include "quant.h"

#include <algorithm>
#include <cmath>

#include "half.h"

namespace kvtc {
namespace {

struct GroupParams {
  uint16_t shift_h, scale_h;
  float shift, inv_scale, scale;
};

// The fp16-rounded shift and scale are what the decoder sees, so the encoder quantizes against
// exactly those values.
inline GroupParams group_params(const float* d, uint32_t size, uint32_t bits) {
  float mn = d[0], mx = d[0];
  for (uint32_t i = 1; i < size; i++) {
    mn = std::min(mn, d[i]);
    mx = std::max(mx, d[i]);
  }
  GroupParams g;
  g.shift_h = f32_to_f16(mn);
  g.shift = f16_to_f32(g.shift_h);
  const float levels = float((1u << bits) - 1);
  g.scale_h = f32_to_f16((mx - g.shift) / levels);
  g.scale = f16_to_f32(g.scale_h);
  g.inv_scale = g.scale > 0 ? 1.0f / g.scale : 0.0f;
  return g;
}

inline uint32_t code_of(float x, const GroupParams& g, uint32_t maxq) {
  const float q = std::nearbyint((x - g.shift) * g.inv_scale);
  return q <= 0.0f ? 0u : (q >= float(maxq) ? maxq : uint32_t(q));
}

}  // namespace

RowLayout make_row_layout(const std::vector<PlanGroup>& groups) {
  RowLayout l;
  l.groups = groups;
  uint32_t off = 0;
  for (size_t j = 0; j < groups.size(); j++) {
    const PlanGroup& g = groups[j];
    l.offset.push_back(off);
    const uint16_t base = uint16_t(j * kContextsPerGroup);
    for (uint16_t c = 0; c < 4; c++) l.context.push_back(base + c);
    const uint32_t nb = packed_bytes(g.size, g.bits);
    for (uint32_t b = 0; b < nb; b++) l.context.push_back(base + 4);
    off += 4 + nb;
    l.k = std::max(l.k, g.start + g.size);
  }
  l.rowBytes = off;
  return l;
}

void quantize_row(const RowLayout& layout, const float* d, uint8_t* row) {
  for (size_t j = 0; j < layout.groups.size(); j++) {
    const PlanGroup& pg = layout.groups[j];
    const float* x = d + pg.start;
    uint8_t* out = row + layout.offset[j];
    const GroupParams g = group_params(x, pg.size, pg.bits);
    out[0] = uint8_t(g.shift_h);
    out[1] = uint8_t(g.shift_h >> 8);
    out[2] = uint8_t(g.scale_h);
    out[3] = uint8_t(g.scale_h >> 8);
    out += 4;
    const uint32_t maxq = (1u << pg.bits) - 1;
    if (pg.bits == 8) {
      for (uint32_t i = 0; i < pg.size; i++) out[i] = uint8_t(code_of(x[i], g, maxq));
      continue;
    }
    uint64_t acc = 0;
    int nacc = 0;
    for (uint32_t i = 0; i < pg.size; i++) {
      acc |= uint64_t(code_of(x[i], g, maxq)) << nacc;
      nacc += pg.bits;
      while (nacc >= 8) {
        *out++ = uint8_t(acc);
        acc >>= 8;
        nacc -= 8;
      }
    }
    if (nacc > 0) *out++ = uint8_t(acc);
  }
}

void dequantize_row(const RowLayout& layout, const uint8_t* row, float* d) {
  for (size_t j = 0; j < layout.groups.size(); j++) {
    const PlanGroup& pg = layout.groups[j];
    const uint8_t* in = row + layout.offset[j];
    const float shift = f16_to_f32(uint16_t(in[0] | (in[1] << 8)));
    const float scale = f16_to_f32(uint16_t(in[2] | (in[3] << 8)));
    in += 4;
    float* x = d + pg.start;
    if (pg.bits == 8) {
      for (uint32_t i = 0; i < pg.size; i++) x[i] = shift + float(in[i]) * scale;
      continue;
    }
    const uint32_t mask = (1u << pg.bits) - 1;
    uint64_t acc = 0;
    int nacc = 0;
    for (uint32_t i = 0; i < pg.size; i++) {
      while (nacc < int(pg.bits)) {
        acc |= uint64_t(*in++) << nacc;
        nacc += 8;
      }
      x[i] = shift + float(uint32_t(acc) & mask) * scale;
      acc >>= pg.bits;
      nacc -= pg.bits;
    }
  }
}

double group_sq_error(const float* d, uint32_t size, uint32_t bits) {
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

}  // namespace kvtc
