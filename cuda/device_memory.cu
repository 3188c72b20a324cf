// Device memory for kvtc's callers (the store's device tier, engines, tests): discovery, the
// allocations deviceMemory hands out, copies, and the checks on caller-provided addresses.
#include <cuda_runtime.h>

#include <mutex>
#include <unordered_map>

#include "cuda_check.cuh"
#include "device.cuh"
#include "gpu.h"

namespace kvtc::gpu {

bool usable(std::string* reason) {
  if (const int e = context_failure(); e != cudaSuccess) {
    if (reason) *reason = std::string("the CUDA context failed earlier: ") + cudaGetErrorName(cudaError_t(e));
    return false;
  }
  int count = 0;
  char why[256] = {0};
  kvtc_cuda_device_count(&count, why, sizeof(why));
  if (count == 0 && reason) *reason = why;
  return count > 0;
}

namespace {
// The live allocations handed out by device_alloc, so a free of anything else (or a second free)
// is an E_LAYOUT instead of a CUDA error that could break the context.
std::mutex g_live_mutex;
std::unordered_map<uint64_t, size_t> g_live;
}  // namespace

// From CUDA's stream-ordered pool (the one the codec's workspaces use): allocating and freeing
// there do not synchronize the device the way cudaMalloc / cudaFree do, so a store moving
// sessions in and out of its device tier never stalls behind an engine's queued kernels.
uint64_t device_alloc(size_t bytes) {
  Stream st{0};
  void* p = nullptr;
  check(cudaMallocAsync(&p, bytes ? bytes : 1, st.get()), "device allocation");
  st.sync();
  std::lock_guard<std::mutex> lk(g_live_mutex);
  g_live[reinterpret_cast<uintptr_t>(p)] = bytes;
  return reinterpret_cast<uintptr_t>(p);
}

void device_free(uint64_t ptr, uint64_t stream) {
  {
    std::lock_guard<std::mutex> lk(g_live_mutex);
    if (g_live.erase(ptr) == 0)
      fail("E_LAYOUT", "device address " + std::to_string(ptr) + " was not allocated by deviceMemory.alloc, or is already freed");
  }
  // In stream order: on the caller's stream the memory returns to the pool only after the work
  // queued there; on our own (blocking) stream, after the legacy default stream's.
  Stream st{uintptr_t(stream)};
  check(cudaFreeAsync(reinterpret_cast<void*>(uintptr_t(ptr)), st.get()), "device free");
}

namespace {
// A copy complete when this returns, on the caller's stream (after its queued work) or on a
// private blocking one: a plain cudaMemcpy may return before a pageable upload or a
// device-to-device copy lands, and work on other streams would not be ordered after it.
void copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, const char* what, uint64_t stream) {
  if (bytes == 0) return;
  Stream st{uintptr_t(stream)};
  check(cudaMemcpyAsync(dst, src, bytes, kind, st.get()), what);
  st.sync();
}
}  // namespace

void copy_to_device(uint64_t dst, const void* src, size_t bytes, uint64_t stream) {
  copy(reinterpret_cast<void*>(uintptr_t(dst)), src, bytes, cudaMemcpyHostToDevice, "host-to-device copy", stream);
}

void copy_to_host(void* dst, uint64_t src, size_t bytes, uint64_t stream) {
  copy(dst, reinterpret_cast<const void*>(uintptr_t(src)), bytes, cudaMemcpyDeviceToHost, "device-to-host copy",
       stream);
}

void copy_on_device(uint64_t dst, uint64_t src, size_t bytes, uint64_t stream) {
  copy(reinterpret_cast<void*>(uintptr_t(dst)), reinterpret_cast<const void*>(uintptr_t(src)), bytes,
       cudaMemcpyDeviceToDevice, "device-to-device copy", stream);
}

MemoryInfo memory_info() {
  MemoryInfo m;
  check(cudaMemGetInfo(&m.free, &m.total), "memory query");
  return m;
}

namespace {
// cuMemGetAddressRange (the allocation holding an address), reached through the runtime so the
// addon does not link the driver library; null when the driver does not offer it.
using AddressRangeFn = int (*)(unsigned long long* base, size_t* size, unsigned long long ptr);
AddressRangeFn address_range() {
  static const AddressRangeFn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &p, 12000, cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      p = nullptr;
    }
    return reinterpret_cast<AddressRangeFn>(p);
  }();
  return fn;
}

// Bytes of ptr's allocation from ptr on; 0 when the driver cannot say (then nothing is checked).
size_t extent_from(uint64_t ptr) {
  const AddressRangeFn range = address_range();
  unsigned long long base = 0;
  size_t size = 0;
  if (!range || range(&base, &size, ptr) != 0 || ptr < base || ptr - base >= size) return 0;
  return size_t(base + size - ptr);
}
}  // namespace

void require_device_pointer(uint64_t ptr, const std::string& what, size_t align, size_t bytes) {
  if (ptr == 0) fail("E_LAYOUT", what + " is a null device address");
  // A misaligned element access is a sticky error that would end every CUDA user in the process.
  if (align > 1 && ptr % align) fail("E_LAYOUT", what + " is not aligned to its " + std::to_string(align) + "-byte elements");
  cudaPointerAttributes a;
  const cudaError_t e = cudaPointerGetAttributes(&a, reinterpret_cast<const void*>(uintptr_t(ptr)));
  if (e != cudaSuccess) cudaGetLastError();
  if (e != cudaSuccess || (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged))
    fail("E_LAYOUT", what + " is not a device address (not allocated by CUDA)");
  int dev = 0;
  check(cudaGetDevice(&dev), "device query");
  if (a.type == cudaMemoryTypeDevice && a.device != dev)
    fail("E_LAYOUT", what + " is memory of device " + std::to_string(a.device) + "; kvtc runs on device " +
                         std::to_string(dev));
  // A kernel writing past an allocation may corrupt another one silently, or end the context.
  if (bytes > 0) {
    const size_t have = extent_from(ptr);
    if (have > 0 && have < bytes)
      fail("E_LAYOUT", what + " has " + std::to_string(have) + " bytes from its address to the end of its allocation; " +
                           std::to_string(bytes) + " are needed");
  }
}

std::vector<const void*> checked_layers(const std::vector<uint64_t>& keys, const std::vector<uint64_t>& values,
                                        DType dtype, uint32_t tokens, uint32_t row_values, const std::string& what) {
  const size_t elem = size_t(dtype_bytes(dtype));
  std::vector<const void*> out;
  for (int s = 0; s < 2; s++) {
    const std::vector<uint64_t>& v = s == 0 ? keys : values;
    for (size_t l = 0; l < v.size(); l++) {
      require_device_pointer(v[l], what + (s == 0 ? ".keys[" : ".values[") + std::to_string(l) + "]", elem,
                             size_t(tokens) * row_values * elem);
      out.push_back(reinterpret_cast<const void*>(uintptr_t(v[l])));
    }
  }
  return out;
}

}  // namespace kvtc::gpu
