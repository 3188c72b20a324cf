// rope_rotate_row (rope.h) on a SIMD path, for the decoder's re-rotation of keys: the same
// products and sums per element as the scalar code, in the same order and without fused
// multiply-adds, so every path gives the scalar code's bits. (rope.h stays the one definition
// the CUDA kernels share; the encoder keeps its scalar rotation, so blobs do not change.)
#pragma once
#include "cpu_dispatch.h"
#include "rope.h"

namespace kvtc {

// Rotates every head of one token row (kvHeads*headDim floats, in place) by the angles
// (cos_a, sin_a: rope.dims/2 each); inverse=true undoes RoPE. Path p must be one simd_has(p).
void rope_rotate_row_path(SimdPath p, const RopeParams& rope, float* row, int kvHeads, int headDim, const float* cos_a,
                          const float* sin_a, bool inverse);

}  // namespace kvtc
