#include "rope.h"

#include <cmath>

namespace kvtc {

void rope_angles(const RopeParams& rope, int32_t pos, float* cos_out, float* sin_out) {
  const int half = rope.dims / 2;
  for (int i = 0; i < half; i++) {
    // double: positions reach 1e5+ and float angles would lose the low bits of the phase.
    double a = double(pos) * double(rope.freqs[i]);
    cos_out[i] = float(std::cos(a));
    sin_out[i] = float(std::sin(a));
  }
}

void rope_rotate_row(const RopeParams& rope, float* row, int kvHeads, int headDim, const float* cos_a,
                     const float* sin_a, bool inverse) {
  if (rope.style == RopeStyle::None) return;
  for (int h = 0; h < kvHeads; h++)
    rope_rotate_head(rope.style, rope.dims, row + size_t(h) * headDim, cos_a, sin_a, inverse ? -1.0f : 1.0f);
}

}  // namespace kvtc
