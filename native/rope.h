// Rotary position embedding. Keys arrive rotated by their absolute position; the codec removes
// the rotation before PCA (so a key's features no longer depend on where it sits) and applies it
// again after decoding.
#pragma once
#include <cstdint>
#include <vector>

#include "hd.h"

namespace kvtc {

enum class RopeStyle : uint8_t { None = 0, Interleaved = 1, Neox = 2 };

struct RopeParams {
  RopeStyle style = RopeStyle::None;
  int dims = 0;               // rotated dimensions per head (even, <= headDim)
  std::vector<float> freqs;   // dims/2 inverse frequencies (radians per position)
};

// Rotates one head x[0..headDim) by the angles (cos_a, sin_a: dims/2 each); sgn -1 undoes RoPE.
// Interleaved pairs are (2i, 2i+1), neox pairs (i, i + dims/2).
KVTC_HD void rope_rotate_head(RopeStyle style, int dims, float* x, const float* cos_a, const float* sin_a,
                              float sgn) {
  const int half = dims / 2;
  for (int i = 0; i < half; i++) {
    const int a = style == RopeStyle::Interleaved ? 2 * i : i;
    const int b = style == RopeStyle::Interleaved ? 2 * i + 1 : i + half;
    const float c = cos_a[i], s = sgn * sin_a[i];
    const float x0 = x[a], x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
  }
}

// Fills cos_out/sin_out (dims/2 each) with the rotation angles of one position.
void rope_angles(const RopeParams& rope, int32_t pos, float* cos_out, float* sin_out);

// Rotates every head of one token row (kvHeads*headDim floats) in place by the given angles;
// inverse=true rotates by the negative angles (undoes RoPE).
void rope_rotate_row(const RopeParams& rope, float* row, int kvHeads, int headDim, const float* cos_a,
                     const float* sin_a, bool inverse);

}  // namespace kvtc
