// The decoder's int8 reconstruction path: X = mean + Σ_g (shift_g·colsum_g + scale_g·codes_g·B_g)
// evaluated with the codes as unsigned bytes against an int8 copy of the basis (per-column
// scales) on AVX-512 VNNI (vpdpbusd), so the dequantize pass and the FP32 GEMM disappear.
// The int8 basis is derived state (built at profile load when the path is selected); blobs are
// unchanged. Selected by KVTC_DECODE=int8 (default f32; read once per process, here only).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "quant.h"

namespace kvtc {

// The basis B (k x p) of one stream group, per plan group, as int8 with per-column scales.
// Plan groups of wide codes (the leading components, which carry most of the energy) get a
// second, residual int8 term: B ≈ col_scale·(B1 + B2/127), so their basis rounding is ~127x
// smaller. Each term is a "part": a plan group's rows (padded to whole quads of 4) in one term.
struct Int8Basis {
  int p = 0, quads = 0;              // columns; row quads over all parts
  std::vector<int> part_group;       // plan group of each part
  std::vector<uint8_t> part_residual;  // 1: the residual term (codes x B2/127, no shift term)
  std::vector<int> part_quad;        // first quad of each part
  std::vector<int> part_quads;       // quads of each part
  std::shared_ptr<const int8_t> data;  // [panel of 16 columns][quad][16 columns][4 rows]
  std::vector<float> col_scale;      // panels*16: B[c][j] ≈ col_scale[j] * int8
  std::vector<float> colsum;         // parts x panels*16: Σ_{c in g} B[c][j] / col_scale[j] (0: residual)
  bool empty() const { return !data; }
  int panels() const { return (p + 15) / 16; }
};

// Builds the int8 basis of a k x p basis (row-major) under a row layout's plan groups.
Int8Basis make_int8_basis(const RowLayout& layout, const float* basis, int k, int p);

// Whether decoding should take the int8 path: KVTC_DECODE=int8 and a CPU with AVX-512 VNNI.
// KVTC_DECODE=f32 or unset: false. Throws E_OPTIONS for any other value, or int8 on a CPU
// without VNNI or with KVTC_SIMD below avx512 (there is no AVX2 int8 path).
bool int8_decode_selected();

// Decodes nb quantized rows (rowBytes apart) of one group into X[nb][p] (row stride ldx):
// X = mean + reconstruction. scratch is reused between calls.
void decode_rows_int8(const RowLayout& layout, const Int8Basis& b, const float* mean, const uint8_t* rows, int nb,
                      float* X, int ldx, std::vector<uint8_t>& scratch);

// A register-only loop of iterations x 12 independent vpdpbusd (the int8 ceiling of one core,
// for the benchmarks); returns its int8 operations (2 per multiply-add). E_OPTIONS without VNNI.
double int8_peak_loop(int64_t iterations);

}  // namespace kvtc
