// Rotary position embedding. Keys arrive rotated by their absolute position; the codec removes
// the rotation before PCA (so a key's features no longer depend on where it sits) and applies it
// again after decoding.
#pragma once
#include <cstdint>
#include <vector>

namespace kvtc {

enum class RopeStyle : uint8_t { None = 0, Interleaved = 1, Neox = 2 };

struct RopeParams {
  RopeStyle style = RopeStyle::None;
  int dims = 0;               // rotated dimensions per head (even, <= headDim)
  std::vector<float> freqs;   // dims/2 inverse frequencies (radians per position)
};

// Fills cos_out/sin_out (dims/2 each) with the rotation angles of one position.
void rope_angles(const RopeParams& rope, int32_t pos, float* cos_out, float* sin_out);

// Rotates every head of one token row (kvHeads*headDim floats) in place by the given angles;
// inverse=true rotates by the negative angles (undoes RoPE).
void rope_rotate_row(const RopeParams& rope, float* row, int kvHeads, int headDim, const float* cos_a,
                     const float* sin_a, bool inverse);

}  // namespace kvtc
