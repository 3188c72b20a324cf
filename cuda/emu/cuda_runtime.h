// A CPU stand-in for the part of the CUDA runtime kvtc uses, so the CUDA kernels and their host
// pipeline run and are tested on machines without a GPU (CI, this project's dev machines).
//
// The .cu sources are compiled as plain C++ with this directory first on the include path and
// KVTC_CUDA_EMULATED defined (the `kvtc_emu` addon target). A launch runs the kernel's blocks one
// after another, and one launch at a time in the process. The threads of a block are fibers
// (ucontext) scheduled round-robin on the calling thread: __syncthreads() yields to the next
// fiber, so every thread of the block reaches a barrier before any passes it (and all must reach
// the same one, or the launch fails as it could hang on a GPU), and __shared__ variables (static
// here) are shared by the block's threads only. Device memory is host memory; every allocation is recorded so pointer
// checks behave as on a device, and KVTC_EMU_DEVICE_BYTES caps the "device" to exercise
// out-of-memory paths. Warp intrinsics are not emulated (kernels that run here must not use
// them); the WMMA subset the tensor-core GEMM uses is, in mma.h.
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <memory>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

struct uint4 {
  unsigned x, y, z, w;
};

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorECCUncorrectable = 214,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchTimeout = 702,
  cudaErrorAssert = 710,
  cudaErrorHardwareStackError = 714,
  cudaErrorIllegalInstruction = 715,
  cudaErrorMisalignedAddress = 716,
  cudaErrorInvalidPc = 718,
  cudaErrorLaunchFailure = 719,
  cudaErrorUnknown = 999,
};
enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaMemoryType : int {
  cudaMemoryTypeUnregistered = 0,
  cudaMemoryTypeHost = 1,
  cudaMemoryTypeDevice = 2,
  cudaMemoryTypeManaged = 3
};
struct cudaPointerAttributes {
  cudaMemoryType type = cudaMemoryTypeUnregistered;
  int device = 0;
  void* devicePointer = nullptr;
  void* hostPointer = nullptr;
};
struct CUstream_st {};
typedef CUstream_st* cudaStream_t;
constexpr unsigned cudaStreamDefault = 0;
constexpr unsigned cudaStreamNonBlocking = 1;
struct CUmemPoolHandle_st {};
typedef CUmemPoolHandle_st* cudaMemPool_t;
enum cudaMemPoolAttr : int { cudaMemPoolAttrReleaseThreshold = 4 };
constexpr unsigned cudaHostAllocDefault = 0;

namespace kvtc_emu {

// The coordinates of the emulated thread that is running (one launch runs at a time).
inline dim3 g_threadIdx, g_blockIdx, g_blockDim, g_gridDim;

// A kernel's fault (what a device would report for it), returned by the next cudaGetLastError().
inline std::atomic<int> g_fault{0};
inline void fault(int e) { g_fault = e; }

struct Scheduler {
  ucontext_t main;
  std::vector<ucontext_t> ctx;
  std::vector<char> done;
  std::vector<void*> site;  // the __syncthreads() call each waiting thread stopped at
  unsigned current = 0;
  const std::function<void()>* fn = nullptr;
};
inline Scheduler* g_sched = nullptr;

inline void fiber_entry() {
  (*g_sched->fn)();
  g_sched->done[g_sched->current] = 1;  // returning resumes the scheduler (uc_link)
}

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

// Shuffles v (a deterministic xorshift stream across the process).
inline void shuffle(std::vector<unsigned>& v) {
  static uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = v.size(); i > 1; i--) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::swap(v[i - 1], v[x % i]);
  }
}

// Runs fn as a grid of blocks of fibers. Blocks run in a shuffled order, and between two barriers
// the threads of a block run in a fresh shuffled order, so a result that depends on the order
// of blocks, or of threads between barriers (a data race on a GPU), differs from run to run
// and from the CPU codec's, and the tests comparing them fail.
inline void launch(dim3 grid, dim3 block, const std::function<void()>& fn) {
  const unsigned nthreads = block.x * block.y * block.z;
  const unsigned nblocks = grid.x * grid.y * grid.z;
  if (nthreads == 0 || nblocks == 0) return;
  std::lock_guard<std::mutex> lk(launch_mutex());
  constexpr size_t kStack = 128 * 1024;
  Scheduler s;
  s.fn = &fn;
  s.ctx.resize(nthreads);
  s.done.resize(nthreads);
  s.site.resize(nthreads);
  std::vector<std::unique_ptr<char[]>> stacks(nthreads);
  for (unsigned t = 0; t < nthreads; t++) {
    stacks[t].reset(new char[kStack]);
    getcontext(&s.ctx[t]);
  }
  g_sched = &s;
  g_blockDim = block;
  g_gridDim = grid;
  std::vector<unsigned> blocks(nblocks), order(nthreads);
  for (unsigned b = 0; b < nblocks; b++) blocks[b] = b;
  for (unsigned t = 0; t < nthreads; t++) order[t] = t;
  shuffle(blocks);
  for (unsigned b : blocks) {
    g_blockIdx = dim3(b % grid.x, (b / grid.x) % grid.y, b / (grid.x * grid.y));
    for (unsigned t = 0; t < nthreads; t++) {
      s.ctx[t].uc_stack.ss_sp = stacks[t].get();
      s.ctx[t].uc_stack.ss_size = kStack;
      s.ctx[t].uc_link = &s.main;
      makecontext(&s.ctx[t], fiber_entry, 0);
      s.done[t] = 0;
    }
    for (unsigned remaining = nthreads; remaining > 0;) {
      shuffle(order);
      for (unsigned t : order) {
        if (s.done[t]) continue;
        s.current = t;
        g_threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
        swapcontext(&s.main, &s.ctx[t]);
        if (s.done[t]) remaining--;
      }
      // Every thread still running waits at a barrier: on a GPU they must all be at the same
      // __syncthreads() (threads that returned no longer count). Different ones would hang or
      // corrupt the block there, while here each round would pass them.
      void* at = nullptr;
      for (unsigned t = 0; t < nthreads; t++) {
        if (s.done[t]) continue;
        if (at && s.site[t] != at) fault(cudaErrorLaunchFailure);
        at = s.site[t];
      }
    }
  }
  g_sched = nullptr;
}

// Device allocations: base -> size, for pointer checks and the emulated memory cap.
struct Heap {
  std::mutex m;
  std::map<uintptr_t, size_t> blocks;
  size_t used = 0;
  size_t cap() const {
    const char* env = std::getenv("KVTC_EMU_DEVICE_BYTES");
    return env ? size_t(std::strtoull(env, nullptr, 10)) : size_t(1) << 34;
  }
};
inline Heap& heap() {
  static Heap h;
  return h;
}

}  // namespace kvtc_emu

#define threadIdx (kvtc_emu::g_threadIdx)
#define blockIdx (kvtc_emu::g_blockIdx)
#define blockDim (kvtc_emu::g_blockDim)
#define gridDim (kvtc_emu::g_gridDim)

// Yields to the next fiber of the block; the scheduler comes back once all have yielded. Not
// inlined, so its return address tells one barrier from another.
inline __attribute__((noinline)) void __syncthreads() {
  kvtc_emu::Scheduler& s = *kvtc_emu::g_sched;
  s.site[s.current] = __builtin_return_address(0);
  swapcontext(&s.ctx[s.current], &s.main);
}

template <typename T>
inline T atomicAdd(T* addr, T v) {
  return __atomic_fetch_add(addr, v, __ATOMIC_SEQ_CST);
}
inline unsigned atomicOr(unsigned* addr, unsigned v) { return __atomic_fetch_or(addr, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicMin(unsigned* addr, unsigned v) {
  unsigned old = __atomic_load_n(addr, __ATOMIC_SEQ_CST);
  while (v < old && !__atomic_compare_exchange_n(addr, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
  }
  return old;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    default: return "cudaErrorLaunchFailure";
  }
}
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
inline cudaError_t cudaGetLastError() { return cudaError_t(kvtc_emu::g_fault.exchange(0)); }
inline cudaError_t cudaPeekAtLastError() { return cudaError_t(kvtc_emu::g_fault.load()); }
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
enum cudaDeviceAttr : int { cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrComputeCapabilityMinor = 76 };
// The emulated device reports compute capability 9.0 (an H100/H200).
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrComputeCapabilityMajor ? 9 : 0;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}

inline cudaError_t cudaMalloc(void** p, size_t n) {
  kvtc_emu::Heap& h = kvtc_emu::heap();
  std::lock_guard<std::mutex> lk(h.m);
  if (n == 0) n = 1;
  if (h.used + n > h.cap()) return cudaErrorMemoryAllocation;
  void* q = std::aligned_alloc(256, (n + 255) / 256 * 256);
  if (!q) return cudaErrorMemoryAllocation;
  h.blocks[uintptr_t(q)] = n;
  h.used += n;
  *p = q;
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  kvtc_emu::Heap& h = kvtc_emu::heap();
  std::lock_guard<std::mutex> lk(h.m);
  auto it = h.blocks.find(uintptr_t(p));
  if (it == h.blocks.end()) return cudaErrorInvalidDevicePointer;
  h.used -= it->second;
  h.blocks.erase(it);
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) { return cudaMalloc(p, n); }
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
inline cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total) {
  kvtc_emu::Heap& h = kvtc_emu::heap();
  std::lock_guard<std::mutex> lk(h.m);
  *total = h.cap();
  *free_b = h.cap() - h.used;
  return cudaSuccess;
}
inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  kvtc_emu::Heap& h = kvtc_emu::heap();
  std::lock_guard<std::mutex> lk(h.m);
  *a = cudaPointerAttributes();
  auto it = h.blocks.upper_bound(uintptr_t(p));
  if (it != h.blocks.begin()) {
    --it;
    if (uintptr_t(p) < it->first + it->second) {
      a->type = cudaMemoryTypeDevice;
      a->devicePointer = const_cast<void*>(p);
    }
  }
  return cudaSuccess;
}
// The driver entry point kvtc asks for: cuMemGetAddressRange over the emulated allocations.
enum cudaDriverEntryPointQueryResult : int { cudaDriverEntryPointSuccess = 0, cudaDriverEntryPointSymbolNotFound = 1 };
constexpr unsigned long long cudaEnableDefault = 0;
inline int kvtc_emu_address_range(unsigned long long* base, size_t* size, unsigned long long p) {
  kvtc_emu::Heap& h = kvtc_emu::heap();
  std::lock_guard<std::mutex> lk(h.m);
  auto it = h.blocks.upper_bound(uintptr_t(p));
  if (it == h.blocks.begin()) return 500;  // CUDA_ERROR_NOT_FOUND
  --it;
  if (uintptr_t(p) >= it->first + it->second) return 500;
  *base = it->first;
  *size = it->second;
  return 0;
}
inline cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** fn, unsigned, unsigned long long,
                                                    cudaDriverEntryPointQueryResult* found) {
  const bool known = std::strcmp(symbol, "cuMemGetAddressRange") == 0;
  *fn = known ? reinterpret_cast<void*>(&kvtc_emu_address_range) : nullptr;
  if (found) *found = known ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
  return cudaSuccess;
}
inline cudaError_t cudaHostAlloc(void** p, size_t n, unsigned) {
  void* q = std::aligned_alloc(64, (std::max<size_t>(n, 1) + 63) / 64 * 64);
  if (!q) return cudaErrorMemoryAllocation;
  *p = q;
  return cudaSuccess;
}
inline cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t = nullptr) {
  if (n) std::memmove(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind k) { return cudaMemcpyAsync(d, s, n, k); }
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t = nullptr) {
  if (n) std::memset(d, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new CUstream_st();
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int) {
  static CUmemPoolHandle_st p;
  *pool = &p;
  return cudaSuccess;
}
inline cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }
