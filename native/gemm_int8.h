// The decoder's int8 reconstruction path: X = mean + Σ_g (shift_g·colsum_g + scale_g·codes_g·B_g)
// evaluated with the codes as unsigned bytes against an int8 copy of the basis (per-column
// scales) on AVX-512 VNNI (vpdpbusd), so the dequantize pass and the FP32 GEMM disappear.
// The int8 basis is derived state (built at profile load when the path is selected); blobs are
// unchanged. The default on a CPU with AVX-512 VNNI for profiles of kInt8DefaultMinRatio and up
// (its extra error is a fraction of a percent of the codec's own; see kInt8ResidualBits);
// KVTC_DECODE=f32 selects the FP32 path, KVTC_DECODE=int8 insists on int8 for every profile.
// Read once per process, here only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "quant.h"

namespace kvtc {

// The basis B (k x p) of one stream group as int8 with per-column scales. Plan groups of
// kInt8ResidualBits or more (where the basis's int8 rounding would add a visible share to the
// group's own quantization error) get a second, residual int8 term: B ≈ col_scale·(B1 + B2/127),
// so their basis rounding is ~127x smaller.
//
// The codes of a token are laid out as unsigned bytes, each plan group from a whole quad of 4
// (zeros pad its last quad), all groups in plan order, then again for the residual terms. A
// "part" is a run of those quads with one shift and scale: the kernel sums each part in int32,
// then adds scale·sum + shift·colsum in float — per part, so fewer, longer parts cost less.
//  - a min/max group is a part of its own: its shift and scale are in the token's row;
//  - a static group without levels is one too, with its calibrated shift and scale;
//  - a static group with reconstruction levels maps each code through a per-component table to
//    u = round(level / s) + 128, decoding as scale s and shift -128·s. Consecutive quads of such
//    groups (with the same residual term) share one part, and so one s = the part's largest
//    |level| / 127, while the largest |level| of every quad in it is within 2x of every other:
//    each component's table then rounds within 1/127 of its own range (~1/16 of a 4-bit step),
//    whatever the spread of variances, and a plan of many small static groups (the whole-cache
//    plan's) runs in a few long parts.
struct Int8Part {
  int quad = 0, quads = 0;   // its rows: first quad, quads
  bool residual = false;     // a residual term (codes x B2/127, no shift term)
  int row_group = -1;        // >= 0: shift and scale are that min/max group's in the token's row
  float shift = 0, scale = 0;  // otherwise: the constants (a residual part's scale already / 127)
  int copy_from = -1;        // a residual part: the first quad of the codes it repeats
};

struct Int8Basis {
  int p = 0, quads = 0;  // columns; row quads over all parts
  std::vector<Int8Part> parts;         // in quad order
  std::vector<int> part_quads;         // parts[i].quads, for the kernel
  std::vector<uint8_t> part_no_shift;  // parts[i].residual, for the kernel
  std::vector<int> group_quad;         // where each plan group's codes start
  // Level groups: size << bits bytes from group_lut[group] (-1: the codes are used as they are).
  std::vector<int64_t> group_lut;
  std::vector<uint8_t> lut;
  std::shared_ptr<const int8_t> data;  // [panel of 16 columns][quad][16 columns][4 rows]
  std::vector<float> col_scale;      // panels*16: B[c][j] ≈ col_scale[j] * int8
  std::vector<float> colsum;         // parts x panels*16: Σ_{c in part} B[c][j] / col_scale[j] (0: residual)
  bool empty() const { return !data; }
  int panels() const { return (p + 15) / 16; }
};

// Plan groups this wide or wider get the residual basis term (see Int8Basis): from 4 bits on, a
// single int8 term's rounding is a visible share of a group's quantization error. Measured on
// 8B-shaped and real stories260K caches at ratios 4-32 (relMSE against the FP32 decode): one
// term everywhere +0.0-57%; residual from 6 bits +0.0-5%; from 4 bits +0.00-0.17% (the rest is
// the level tables' rounding) at 761 MB/s against 314 FP32; from 3 bits the same error, 659 MB/s.
constexpr uint32_t kInt8ResidualBits = 4;

// Builds the int8 basis of a k x p basis (row-major) under a row layout's plan groups.
Int8Basis make_int8_basis(const RowLayout& layout, const float* basis, int k, int p,
                          uint32_t residual_bits = kInt8ResidualBits);

// Whether decoding takes the int8 path. Unset KVTC_DECODE: a CPU with AVX-512 VNNI whose codec
// runs the avx512 path (for profiles of kInt8DefaultMinRatio and up, int8_decode_for).
// KVTC_DECODE=f32: false. KVTC_DECODE=int8: true, or E_OPTIONS on a CPU without VNNI or with
// KVTC_SIMD below avx512 (there is no AVX2 int8 path). Any other value: E_OPTIONS.
bool int8_decode_selected();

// Profiles asked for a lower ratio decode on the FP32 path unless KVTC_DECODE=int8: on the
// fidelity bench's real caches, at 2-5x (where the codec's own error is smallest) the int8 path's
// level tables raised next-token KL by 0.8-3.8%; from 6x up it moved KL by -1.5..0% for the
// whole-cache plan (-1.5..+0.3% for the per-stream plan), as at every ratio without levels.
constexpr double kInt8DefaultMinRatio = 6;

// Whether a profile asked for `ratio` decodes on the int8 path: KVTC_DECODE=int8 always; unset,
// int8_decode_selected() and ratio >= kInt8DefaultMinRatio. An invalid KVTC_DECODE: false here
// (the decode that needs the choice fails with E_OPTIONS, not the profile load).
bool int8_decode_for(double ratio);

// Decodes nb quantized rows (rowBytes apart) of one group into X[nb][p] (row stride ldx):
// X = mean + reconstruction. scratch is reused between calls.
void decode_rows_int8(const RowLayout& layout, const Int8Basis& b, const float* mean, const uint8_t* rows, int nb,
                      float* X, int ldx, std::vector<uint8_t>& scratch);

// A register-only loop of iterations x 12 independent vpdpbusd (the int8 ceiling of one core,
// for the benchmarks); returns its int8 operations (2 per multiply-add). E_OPTIONS without VNNI.
double int8_peak_loop(int64_t iterations);

}  // namespace kvtc
