// The transform-coding kernels and their launchers. Every launcher takes the stream to run on
// and returns the launch status (cudaSuccess when the grid was accepted or there is nothing to
// do); none synchronizes. The per-element arithmetic (element conversion, RoPE, quantization,
// rANS) is the CPU codec's own, from the shared headers, so both backends write one format.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "../native/half.h"
#include "../native/rans.h"
#include "../native/rope.h"

namespace kvtc::gpu {

// The layout and RoPE of a profile, as kernels see it.
struct KernelLayout {
  uint32_t layers;
  uint32_t kv_heads, head_dim, rv;  // rv = kv_heads * head_dim
  DType dtype;
  RopeStyle rope;  // None for values
  int rope_dims;
};

constexpr uint32_t kKernelPlanWords = 8;
constexpr uint32_t kKernelNoLevels = 0xffffffffu;  // plan word 7 of a group decoded as shift + code * scale

// One stream group's constants in device memory.
struct KernelGroup {
  uint32_t layer_start, layer_count, p, k;
  const float* mean;         // p
  uint32_t plan_groups;      // coded plan groups
  const uint32_t* plan;      // plan_groups x kKernelPlanWords: {start, size, bits, offset, mode, shift, scale,
                             // levels} (shift and scale: float bits, static groups only; levels: the
                             // group's first entry in `levels`, or kKernelNoLevels)
  uint32_t row_bytes;
  const float* levels;       // static groups' reconstruction levels (PlanGroup::levels, concatenated)
};

// Per middle token i (token t0 + i); layers: [keys of every layer..., values of every layer...]: flags[i] = 1 when the token must be stored raw (a non-finite
// value, or ||x|| + mean_norm > limit in some stream group). groups: `count` entries of
// {stream, layer_start, layer_count} and mean_norms: their ||mean||.
cudaError_t launch_scan_escapes(const void* const* layers, const KernelLayout& lay, uint32_t t0, uint32_t n,
                                const uint32_t* groups, const double* mean_norms, uint32_t count, double limit,
                                uint8_t* flags, cudaStream_t s);

// cos/sin (float, from double angles as on the CPU) of the rope_dims/2 frequencies at each of n
// positions: out[i * half + f].
cudaError_t launch_rope_angles(const float* freqs, int half, const int32_t* pos, uint32_t n, float* cos_out,
                               float* sin_out, cudaStream_t s);

// X[i][0..p) = the group's features of token toks[i]: its layers side by side, RoPE removed
// (angles of row i), mean subtracted. layers: the stream's per-layer device pointers.
cudaError_t launch_gather_features(const void* const* layers, const KernelLayout& lay, const KernelGroup& g,
                                   const uint32_t* toks, uint32_t n, const float* cos_a, const float* sin_a,
                                   float* X, cudaStream_t s);

// The inverse: adds the mean to X[i], re-applies RoPE, converts to the dtype and scatters into
// token toks[i] of the group's layers.
cudaError_t launch_scatter_features(const float* X, const KernelLayout& lay, const KernelGroup& g,
                                    const uint32_t* toks, uint32_t n, const float* cos_a, const float* sin_a,
                                    void* const* layers, cudaStream_t s);

// rows[i] = the quantized row of coefficients D[i][0..k) (the plan's groups; ldd = k).
cudaError_t launch_quantize(const float* D, uint32_t ldd, uint32_t n, const KernelGroup& g, uint8_t* rows,
                            cudaStream_t s);

// D[i][0..k) from rows[i]; components outside the plan must be zeroed by the caller.
cudaError_t launch_dequantize(const uint8_t* rows, uint32_t n, const KernelGroup& g, float* D, uint32_t ldd,
                              cudaStream_t s);

// The entropy stage runs as one launch over every chunk of every section of a blob (thousands
// of independent streams), described by job lists built on the host.

// One rANS stream to encode: len bytes of whole rows (byte j of a row coded with
// tables[context[j % row_bytes]]) into the tail of slot[0, cap).
struct RansEncodeJob {
  const uint8_t* data;
  uint64_t len;
  uint8_t* slot;
  uint64_t cap;
  const uint16_t* context;
  const RansTable* tables;
  uint32_t row_bytes;
};

// One rANS stream to decode into out[0, out_len).
struct RansDecodeJob {
  const uint8_t* in;
  uint64_t in_len;
  uint8_t* out;
  uint64_t out_len;
  const uint16_t* context;
  const RansTable* tables;
  uint32_t row_bytes;
};

// A byte range to copy (packing coded streams and stored rows into one output buffer).
struct CopyJob {
  const uint8_t* src;
  uint8_t* dst;
  uint64_t len;
};

// starts[j] = where job j's stream begins in its slot (cap + 1 if the slot was too small).
cudaError_t launch_rans_encode(const RansEncodeJob* jobs, uint32_t count, uint64_t* starts, cudaStream_t s);

// status[j] = the RansStatus of job j.
cudaError_t launch_rans_decode(const RansDecodeJob* jobs, uint32_t count, int* status, cudaStream_t s);

// One block per job.
cudaError_t launch_copy_jobs(const CopyJob* jobs, uint32_t count, cudaStream_t s);

// Copies whole token rows (row_bytes each) between the cache layers and the packed raw section,
// ordered layer, stream (keys, values), token. to_section: gather (encode) or scatter (decode).
cudaError_t launch_copy_raw(void* const* layers, uint32_t nlayers, uint32_t row_bytes, const uint32_t* toks,
                            uint32_t n, uint8_t* section, bool to_section, cudaStream_t s);

}  // namespace kvtc::gpu
