#include "quant.h"

#include <algorithm>

namespace kvtc {

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
    quantize_group(d + pg.start, pg.size, pg.bits, row + layout.offset[j]);
  }
}

void dequantize_row(const RowLayout& layout, const uint8_t* row, float* d) {
  for (size_t j = 0; j < layout.groups.size(); j++) {
    const PlanGroup& pg = layout.groups[j];
    dequantize_group(row + layout.offset[j], pg.size, pg.bits, d + pg.start);
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
