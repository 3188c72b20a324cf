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
  const int half = rope.dims / 2;
  const float sgn = inverse ? -1.0f : 1.0f;
  for (int h = 0; h < kvHeads; h++) {
    float* x = row + size_t(h) * headDim;
    for (int i = 0; i < half; i++) {
      // interleaved pairs (2i, 2i+1); neox pairs (i, i + dims/2)
      const int a = rope.style == RopeStyle::Interleaved ? 2 * i : i;
      const int b = rope.style == RopeStyle::Interleaved ? 2 * i + 1 : i + half;
      const float c = cos_a[i], s = sgn * sin_a[i];
      const float x0 = x[a], x1 = x[b];
      x[a] = x0 * c - x1 * s;
      x[b] = x0 * s + x1 * c;
    }
  }
}

}  // namespace kvtc
