// Per-token, per-group min/max uniform quantization of PCA coefficients and the byte layout of a
// quantized token row. Each coded group of a row is [shift f16][scale f16][packed codes], codes
// packed LSB-first and padded to a whole byte, so every group starts on a byte boundary and the
// entropy coder can give each byte a context by its position in the row.
#pragma once
#include <cstdint>
#include <vector>

namespace kvtc {

struct PlanGroup {
  uint32_t start = 0;  // first principal component of the group
  uint32_t size = 0;   // number of components
  uint8_t bits = 0;    // code width (> 0; dropped components are simply not in the plan)
};

// Entropy-coding contexts per group: shift lo/hi byte, scale lo/hi byte, code bytes.
constexpr int kContextsPerGroup = 5;

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

// Bits a group costs per token, fp16 shift and scale included.
inline uint32_t group_cost_bits(uint32_t size, uint32_t bits) { return 8 * packed_bytes(size, bits) + 32; }

RowLayout make_row_layout(const std::vector<PlanGroup>& groups);

// Quantizes the coefficients d[0..k) of one token into row[0..rowBytes).
void quantize_row(const RowLayout& layout, const float* d, uint8_t* row);

// Reconstructs d[0..k) from one quantized row.
void dequantize_row(const RowLayout& layout, const uint8_t* row, float* d);

// Squared error of quantizing one group of `size` values with `bits` (as quantize_row would).
double group_sq_error(const float* d, uint32_t size, uint32_t bits);

}  // namespace kvtc
