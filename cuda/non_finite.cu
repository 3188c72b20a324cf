// The NaN/Inf check of a cache in device memory (the store's nonFinite: 'reject' for a
// DeviceKvCache), reporting the first non-finite value in the CPU check's order: keys before
// values, then layer, then token.
#include <cstdint>
#include <vector>

#include "../native/half.h"
#include "cuda_check.cuh"
#include "gpu.h"

namespace kvtc::gpu {
namespace {

constexpr unsigned kThreads = 256;
constexpr uint32_t kTokensPerBlock = 64;
constexpr uint32_t kNone = 0xffffffffu;

// Block (x, y) reads tokens [x * kTokensPerBlock, +kTokensPerBlock) of buffer y (keys of every
// layer, then values) and lowers first[y] to the smallest token holding a non-finite value.
__global__ void __launch_bounds__(kThreads)
    first_non_finite_kernel(const void* const* buffers, DType dtype, uint32_t rv, uint32_t tokens, uint32_t* first) {
  const uint64_t t0 = uint64_t(blockIdx.x) * kTokensPerBlock;
  const uint64_t t1 = t0 + kTokensPerBlock < tokens ? t0 + kTokensPerBlock : tokens;
  const void* buf = buffers[blockIdx.y];
  for (uint64_t j = t0 * rv + threadIdx.x; j < t1 * rv; j += blockDim.x)
    if (!finite_f32(load_elem(buf, dtype, j))) atomicMin(&first[blockIdx.y], uint32_t(j / rv));
}

}  // namespace

NonFiniteAt find_non_finite_device(const DeviceCacheView& c, uint32_t row_values, uint64_t stream) {
  if (c.keys.size() != c.values.size())
    fail("E_LAYOUT", "cache has " + std::to_string(c.keys.size()) + " key and " + std::to_string(c.values.size()) +
                         " value layers");
  const std::vector<const void*> buffers = checked_layers(c.keys, c.values, c.dtype, c.tokens, row_values, "cache");
  NonFiniteAt at;
  if (buffers.empty() || c.tokens == 0 || row_values == 0) return at;
  if (buffers.size() > 65535) fail("E_LAYOUT", "too many layers");  // grid.y
  Stream st{uintptr_t(stream)};
  DeviceArray<const void*> d_buffers(buffers.size(), st);
  d_buffers.upload(buffers.data(), buffers.size());
  DeviceArray<uint32_t> first(buffers.size(), st);
  check(cudaMemsetAsync(first.get(), 0xff, buffers.size() * sizeof(uint32_t), st.get()), "workspace clear");
  const dim3 grid((c.tokens + kTokensPerBlock - 1) / kTokensPerBlock, unsigned(buffers.size()));
  KVTC_LAUNCH(first_non_finite_kernel, grid, dim3(kThreads), st.get(), d_buffers.get(), c.dtype, row_values, c.tokens,
              first.get());
  check_launch(cudaGetLastError(), "non-finite scan");
  std::vector<uint32_t> found(buffers.size());
  first.download(found.data(), found.size());
  st.sync();
  const size_t layers = c.keys.size();
  for (size_t b = 0; b < found.size(); b++)
    if (found[b] != kNone) return NonFiniteAt{true, int(b / layers), uint32_t(b % layers), found[b]};
  return at;
}

}  // namespace kvtc::gpu
