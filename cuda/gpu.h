// The CUDA backend as the rest of the addon sees it: plain C++ (no CUDA headers), so the N-API
// glue compiles with the host compiler. Every function throws KvtcException on failure: E_BACKEND
// for a CUDA error, E_CAPACITY when device memory runs out, E_LAYOUT for bad arguments. Device
// addresses travel as uint64_t (bigint in JavaScript). Calls block the calling thread until
// their GPU work is done, so callers run them on worker threads, never on the main thread.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../native/codec.h"

namespace kvtc::gpu {

// A cache whose layers live in device memory: per layer a device address of
// [tokens][kvHeads][headDim] elements of dtype.
struct DeviceCacheView {
  uint32_t tokens = 0;
  DType dtype = DType::F32;
  std::vector<uint64_t> keys, values;
  const int32_t* positions = nullptr;  // host memory; nullptr: 0..tokens-1
};

// Whether a CUDA device can run the codec; reason says why not.
bool usable(std::string* reason);

// The projection GEMM mode in use (cuda/gemm.cuh): "tf32x3", "tf32", "fp32", "cublas-fp32" or
// "cublas-tf32"; or why $KVTC_GEMM is not valid.
std::string gemm_path();

// C[m x n] = A[m x k] * op(B) with the GEMM mode named `mode`, from host arrays (op(B) = B
// [k x n], or the transpose of B [n x k] with trans_b), run `repeats` times on the device: the
// projection kernels on their own, for tests and benchmarks. seconds: wall time of one run
// (mean over the repeats, the device synchronized), operands already on the device.
struct GemmRun {
  std::vector<float> c;
  double seconds = 0;
};
GemmRun run_gemm(const std::string& mode, int m, int n, int k, const float* a, const float* b, bool trans_b,
                 int repeats);

// Encodes on the GPU into the CPU codec's container format. Values agree with the CPU's to float
// rounding (sums run in another order and multiply-adds fuse), so a coefficient on a rounding
// boundary may get the neighbouring code: same format, not always the same bytes.
// stream: a cudaStream_t of the caller to order against (0: a private stream).
std::vector<uint8_t> encode_device(const Profile& pr, const DeviceCacheView& cache, const EncodeOptions& opts,
                                   uint64_t stream);
// Same, from a cache in host memory (copied to the device first).
std::vector<uint8_t> encode_host(const Profile& pr, const CacheView& cache, const EncodeOptions& opts);

// Decodes a blob (host memory; page-locked makes the upload asynchronous) whose header was read
// with its checksum verified, into per-layer device buffers of [tokens][kvHeads][headDim].
void decode_to_device(const Profile& pr, const uint8_t* blob, const BlobHeader& h, const std::vector<uint64_t>& keys,
                      const std::vector<uint64_t>& values, int32_t* positions, uint64_t stream);
// Same, into host arrays [layers][tokens][kvHeads*headDim] (as decode_blob).
void decode_to_host(const Profile& pr, const uint8_t* blob, const BlobHeader& h, void* keys, void* values,
                    int32_t* positions);

// The first NaN or Inf of a cache in device memory, in the CPU check's order (keys before
// values, then layer, then token); found is false when every value is finite.
struct NonFiniteAt {
  bool found = false;
  int stream = 0;  // 0 keys, 1 values
  uint32_t layer = 0, token = 0;
};
NonFiniteAt find_non_finite_device(const DeviceCacheView& cache, uint32_t row_values, uint64_t stream);

// Device memory owned by kvtc (the store's device tier; tests), from CUDA's stream-ordered pool.
// device_free takes only live addresses from device_alloc (E_LAYOUT otherwise) and releases them
// in stream order. Copies are complete when they return. stream: a caller's cudaStream_t to
// order the operation after (0: after the legacy default stream's work).
uint64_t device_alloc(size_t bytes);
void device_free(uint64_t ptr, uint64_t stream = 0);
void copy_to_device(uint64_t dst, const void* src, size_t bytes, uint64_t stream = 0);
void copy_to_host(void* dst, uint64_t src, size_t bytes, uint64_t stream = 0);
void copy_on_device(uint64_t dst, uint64_t src, size_t bytes, uint64_t stream = 0);
struct MemoryInfo {
  size_t free = 0, total = 0;
};
MemoryInfo memory_info();

// Throws E_LAYOUT unless ptr is device (or managed) memory of the current device, aligned to
// `align` bytes, whose allocation holds `bytes` bytes from ptr on. The extent comes from the
// driver (cuMemGetAddressRange); where it cannot tell, the caller's claim is trusted.
void require_device_pointer(uint64_t ptr, const std::string& what, size_t align, size_t bytes);

// The buffers of a device cache, keys of every layer then values, each checked as above for
// `tokens` rows of row_values elements of dtype (named what.keys[l] / what.values[l]).
std::vector<const void*> checked_layers(const std::vector<uint64_t>& keys, const std::vector<uint64_t>& values,
                                        DType dtype, uint32_t tokens, uint32_t row_values, const std::string& what);

}  // namespace kvtc::gpu
