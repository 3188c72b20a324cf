#include "codec_kernels.cuh"

#include <cmath>

#include "../native/quant.h"
#include "cuda_check.cuh"

namespace kvtc::gpu {
namespace {

constexpr unsigned kThreads = 256;
// The escape scan reduces across its block at every stream group. The CPU emulation pays per
// fiber switch, so it runs the same kernel with narrower blocks (the reduction is generic).
#if defined(KVTC_CUDA_EMULATED)
constexpr unsigned kScanThreads = 32;
#else
constexpr unsigned kScanThreads = 256;
#endif

inline unsigned blocks_for(uint64_t n, unsigned threads = kThreads) { return unsigned((n + threads - 1) / threads); }

// The RoPE pair of element d of a head (rotated dims only): its partner, the frequency index,
// and whether d is the pair's first element.
__device__ __forceinline__ void rope_pair(RopeStyle style, int dims, int d, int& partner, int& f, bool& first) {
  const int half = dims / 2;
  if (style == RopeStyle::Interleaved) {
    partner = d ^ 1;
    f = d >> 1;
    first = (d & 1) == 0;
  } else {
    first = d < half;
    partner = first ? d + half : d - half;
    f = first ? d : d - half;
  }
}

__global__ void __launch_bounds__(kScanThreads)
    scan_escapes_kernel(const void* const* layers, KernelLayout lay, uint32_t t0, const uint32_t* groups,
                        const double* mean_norms, uint32_t count, double limit, uint8_t* flags) {
  __shared__ double sq[kScanThreads];
  __shared__ unsigned bad;
  const uint32_t i = blockIdx.x;
  const uint64_t t = uint64_t(t0) + i;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  for (uint32_t gi = 0; gi < count; gi++) {
    const uint32_t stream = groups[3 * gi], l0 = groups[3 * gi + 1], nl = groups[3 * gi + 2];
    const void* const* base = layers + size_t(stream) * lay.layers;  // [keys..., values...]
    double acc = 0;
    unsigned nonfinite = 0;
    for (uint64_t j = threadIdx.x; j < uint64_t(nl) * lay.rv; j += blockDim.x) {
      const uint32_t l = uint32_t(j / lay.rv), e = uint32_t(j % lay.rv);
      const float v = load_elem(base[l0 + l], lay.dtype, t * lay.rv + e);
      if (!finite_f32(v)) nonfinite = 1;
      acc += double(v) * double(v);
    }
    sq[threadIdx.x] = acc;
    if (nonfinite) atomicOr(&bad, 1u);
    __syncthreads();
    for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
      if (threadIdx.x < w) sq[threadIdx.x] += sq[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0 && sqrt(sq[0]) + mean_norms[gi] > limit) bad = 1;
    __syncthreads();
  }
  if (threadIdx.x == 0) flags[i] = bad ? 1 : 0;
}

__global__ void rope_angles_kernel(const float* freqs, int half, const int32_t* pos, uint32_t n, float* cos_out,
                                   float* sin_out) {
  const uint64_t idx = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= uint64_t(n) * half) return;
  const uint64_t i = idx / half;
  const int f = int(idx % half);
  // double, as on the CPU: positions reach 1e5+ and float angles lose the phase's low bits.
  const double a = double(pos[i]) * double(freqs[f]);
  cos_out[idx] = float(cos(a));
  sin_out[idx] = float(sin(a));
}

// One element j of token row i of a group's feature vector: layer l, element e of the row.
__global__ void __launch_bounds__(kThreads)
    gather_kernel(const void* const* layers, KernelLayout lay, KernelGroup g, const uint32_t* toks,
                  const float* cos_a, const float* sin_a, float* X) {
  const uint32_t i = blockIdx.y;
  const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= g.p) return;
  const uint32_t l = j / lay.rv, e = j % lay.rv, d = e % lay.head_dim;
  const void* src = layers[g.layer_start + l];
  const size_t row = size_t(toks[i]) * lay.rv;
  float x = load_elem(src, lay.dtype, row + e);
  if (lay.rope != RopeStyle::None && int(d) < lay.rope_dims) {
    int partner, f;
    bool first;
    rope_pair(lay.rope, lay.rope_dims, int(d), partner, f, first);
    const float y = load_elem(src, lay.dtype, row + (e - d) + uint32_t(partner));
    const size_t a = size_t(i) * (lay.rope_dims / 2) + f;
    const float c = cos_a[a], s = -sin_a[a];  // inverse rotation, as rope_rotate_head(sgn = -1)
    x = first ? x * c - y * s : y * s + x * c;
  }
  X[size_t(i) * g.p + j] = x - g.mean[j];
}

__global__ void __launch_bounds__(kThreads)
    scatter_kernel(const float* X, KernelLayout lay, KernelGroup g, const uint32_t* toks, const float* cos_a,
                   const float* sin_a, void* const* layers) {
  const uint32_t i = blockIdx.y;
  const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= g.p) return;
  const uint32_t l = j / lay.rv, e = j % lay.rv, d = e % lay.head_dim;
  const float* xr = X + size_t(i) * g.p;
  float x = xr[j] + g.mean[j];
  if (lay.rope != RopeStyle::None && int(d) < lay.rope_dims) {
    int partner, f;
    bool first;
    rope_pair(lay.rope, lay.rope_dims, int(d), partner, f, first);
    const uint32_t jp = j - d + uint32_t(partner);
    const float y = xr[jp] + g.mean[jp];
    const size_t a = size_t(i) * (lay.rope_dims / 2) + f;
    const float c = cos_a[a], s = sin_a[a];
    x = first ? x * c - y * s : y * s + x * c;
  }
  store_elem(x, lay.dtype, layers[g.layer_start + l], size_t(toks[i]) * lay.rv + e);
}

__global__ void quantize_kernel(const float* D, uint32_t ldd, uint32_t n, KernelGroup g, uint8_t* rows) {
  const uint64_t idx = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= uint64_t(n) * g.plan_groups) return;
  const uint64_t i = idx / g.plan_groups;
  const uint32_t* pg = g.plan + kKernelPlanWords * (idx % g.plan_groups);
  if (pg[4] == kGroupStatic)
    quantize_group_static(D + i * ldd + pg[0], pg[1], pg[2], __uint_as_float(pg[5]), __uint_as_float(pg[6]),
                          rows + i * g.row_bytes + pg[3]);
  else
    quantize_group(D + i * ldd + pg[0], pg[1], pg[2], rows + i * g.row_bytes + pg[3]);
}

__global__ void dequantize_kernel(const uint8_t* rows, uint32_t n, KernelGroup g, float* D, uint32_t ldd) {
  const uint64_t idx = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= uint64_t(n) * g.plan_groups) return;
  const uint64_t i = idx / g.plan_groups;
  const uint32_t* pg = g.plan + kKernelPlanWords * (idx % g.plan_groups);
  if (pg[4] == kGroupStatic)
    dequantize_group_static(rows + i * g.row_bytes + pg[3], pg[1], pg[2], __uint_as_float(pg[5]), __uint_as_float(pg[6]),
                            pg[7] == kKernelNoLevels ? nullptr : g.levels + pg[7], D + i * ldd + pg[0]);
  else
    dequantize_group(rows + i * g.row_bytes + pg[3], pg[1], pg[2], D + i * ldd + pg[0]);
}

__global__ void rans_encode_kernel(const RansEncodeJob* jobs, uint32_t count, uint64_t* starts) {
  const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= count) return;
  const RansEncodeJob& w = jobs[j];
  starts[j] = rans_encode_span(w.data, w.len, w.context, w.row_bytes, w.tables, w.slot, w.cap);
}

__global__ void rans_decode_kernel(const RansDecodeJob* jobs, uint32_t count, int* status) {
  const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= count) return;
  const RansDecodeJob& w = jobs[j];
  status[j] = rans_decode_span(w.in, w.in_len, w.out, w.out_len, w.context, w.row_bytes, w.tables);
}

// Copies len bytes with the threads of a block: 16 bytes per access when both ends and the
// length allow it (rows of 2-byte elements and device allocations usually do), bytes otherwise.
__device__ __forceinline__ void block_copy(uint8_t* dst, const uint8_t* src, uint64_t len) {
  if (((uintptr_t(dst) | uintptr_t(src) | len) & 15) == 0) {
    uint4* d = reinterpret_cast<uint4*>(dst);
    const uint4* s = reinterpret_cast<const uint4*>(src);
    for (uint64_t i = threadIdx.x; i < len / 16; i += blockDim.x) d[i] = s[i];
  } else {
    for (uint64_t i = threadIdx.x; i < len; i += blockDim.x) dst[i] = src[i];
  }
}

__global__ void copy_jobs_kernel(const CopyJob* jobs) {
  const CopyJob w = jobs[blockIdx.x];  // in registers: the byte stores could alias the job
  block_copy(w.dst, w.src, w.len);
}

__global__ void copy_raw_kernel(void* const* layers, uint32_t nlayers, uint32_t row_bytes, const uint32_t* toks,
                                uint32_t n, uint8_t* section, bool to_section) {
  const uint64_t r = blockIdx.x;  // (layer * 2 + stream) * n + token index
  const uint32_t ti = uint32_t(r % n), ls = uint32_t(r / n), l = ls / 2, s = ls % 2;
  uint8_t* row = static_cast<uint8_t*>(layers[s * nlayers + l]) + size_t(toks[ti]) * row_bytes;
  uint8_t* sec = section + r * row_bytes;
  if (to_section)
    block_copy(sec, row, row_bytes);
  else
    block_copy(row, sec, row_bytes);
}

}  // namespace

cudaError_t launch_scan_escapes(const void* const* layers, const KernelLayout& lay, uint32_t t0, uint32_t n,
                                const uint32_t* groups, const double* mean_norms, uint32_t count, double limit,
                                uint8_t* flags, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  KVTC_LAUNCH(scan_escapes_kernel, dim3(n), dim3(kScanThreads), s, layers, lay, t0, groups, mean_norms, count, limit,
              flags);
  return cudaGetLastError();
}

cudaError_t launch_rope_angles(const float* freqs, int half, const int32_t* pos, uint32_t n, float* cos_out,
                               float* sin_out, cudaStream_t s) {
  if (n == 0 || half == 0) return cudaSuccess;
  KVTC_LAUNCH(rope_angles_kernel, dim3(blocks_for(uint64_t(n) * half)), dim3(kThreads), s, freqs, half, pos, n,
              cos_out, sin_out);
  return cudaGetLastError();
}

cudaError_t launch_gather_features(const void* const* layers, const KernelLayout& lay, const KernelGroup& g,
                                   const uint32_t* toks, uint32_t n, const float* cos_a, const float* sin_a,
                                   float* X, cudaStream_t s) {
  if (n == 0 || g.p == 0) return cudaSuccess;
  if (n > 65535) return cudaErrorInvalidValue;  // grid.y limit: callers batch tokens
  KVTC_LAUNCH(gather_kernel, dim3(blocks_for(g.p), n), dim3(kThreads), s, layers, lay, g, toks, cos_a, sin_a, X);
  return cudaGetLastError();
}

cudaError_t launch_scatter_features(const float* X, const KernelLayout& lay, const KernelGroup& g,
                                    const uint32_t* toks, uint32_t n, const float* cos_a, const float* sin_a,
                                    void* const* layers, cudaStream_t s) {
  if (n == 0 || g.p == 0) return cudaSuccess;
  if (n > 65535) return cudaErrorInvalidValue;
  KVTC_LAUNCH(scatter_kernel, dim3(blocks_for(g.p), n), dim3(kThreads), s, X, lay, g, toks, cos_a, sin_a, layers);
  return cudaGetLastError();
}

cudaError_t launch_quantize(const float* D, uint32_t ldd, uint32_t n, const KernelGroup& g, uint8_t* rows,
                            cudaStream_t s) {
  if (n == 0 || g.plan_groups == 0) return cudaSuccess;
  KVTC_LAUNCH(quantize_kernel, dim3(blocks_for(uint64_t(n) * g.plan_groups)), dim3(kThreads), s, D, ldd, n, g,
              rows);
  return cudaGetLastError();
}

cudaError_t launch_dequantize(const uint8_t* rows, uint32_t n, const KernelGroup& g, float* D, uint32_t ldd,
                              cudaStream_t s) {
  if (n == 0 || g.plan_groups == 0) return cudaSuccess;
  KVTC_LAUNCH(dequantize_kernel, dim3(blocks_for(uint64_t(n) * g.plan_groups)), dim3(kThreads), s, rows, n, g, D,
              ldd);
  return cudaGetLastError();
}

cudaError_t launch_rans_encode(const RansEncodeJob* jobs, uint32_t count, uint64_t* starts, cudaStream_t s) {
  if (count == 0) return cudaSuccess;
  // Small blocks: each thread runs a long sequential loop, so spread them over all SMs.
  KVTC_LAUNCH(rans_encode_kernel, dim3(blocks_for(count, 64)), dim3(64), s, jobs, count, starts);
  return cudaGetLastError();
}

cudaError_t launch_rans_decode(const RansDecodeJob* jobs, uint32_t count, int* status, cudaStream_t s) {
  if (count == 0) return cudaSuccess;
  KVTC_LAUNCH(rans_decode_kernel, dim3(blocks_for(count, 64)), dim3(64), s, jobs, count, status);
  return cudaGetLastError();
}

cudaError_t launch_copy_jobs(const CopyJob* jobs, uint32_t count, cudaStream_t s) {
  if (count == 0) return cudaSuccess;
  KVTC_LAUNCH(copy_jobs_kernel, dim3(count), dim3(128), s, jobs);
  return cudaGetLastError();
}

cudaError_t launch_copy_raw(void* const* layers, uint32_t nlayers, uint32_t row_bytes, const uint32_t* toks,
                            uint32_t n, uint8_t* section, bool to_section, cudaStream_t s) {
  if (n == 0 || nlayers == 0) return cudaSuccess;
  KVTC_LAUNCH(copy_raw_kernel, dim3(2 * nlayers * n), dim3(128), s, layers, nlayers, row_bytes, toks, n, section,
              to_section);
  return cudaGetLastError();
}

}  // namespace kvtc::gpu
