// Host-side helpers of the CUDA pipeline: CUDA statuses become typed KvtcExceptions (out of
// memory is E_CAPACITY, anything else E_BACKEND; never an abort), a kernel-launch macro that the
// CPU emulator (emu/cuda_runtime.h) can stand in for, a stream owned for one call, and
// stream-ordered device buffers.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>

#include "../native/errors.h"

#if defined(KVTC_CUDA_EMULATED)
#define KVTC_LAUNCH(kernel, grid, block, stream, ...) \
  kvtc_emu::launch((grid), (block), [&]() { kernel(__VA_ARGS__); })
#else
#define KVTC_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

namespace kvtc::gpu {

// Errors after which the process's CUDA context is unusable: every later call fails.
inline bool is_sticky(cudaError_t e) {
  return e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure || e == cudaErrorMisalignedAddress ||
         e == cudaErrorIllegalInstruction || e == cudaErrorInvalidPc || e == cudaErrorHardwareStackError ||
         e == cudaErrorAssert || e == cudaErrorLaunchTimeout || e == cudaErrorECCUncorrectable;
}

// The sticky error that broke the context (cudaSuccess while it is healthy).
inline std::atomic<int>& context_failure() {
  static std::atomic<int> e{cudaSuccess};
  return e;
}

// Throws for a failed CUDA call; clears the runtime's last-error state first.
inline void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();
  if (is_sticky(e)) context_failure() = e;
  fail(e == cudaErrorMemoryAllocation ? "E_CAPACITY" : "E_BACKEND",
       std::string("CUDA ") + what + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

// Fails fast once the context is broken, instead of queueing work that cannot run.
inline void require_healthy_context() {
  const int e = context_failure();
  if (e != cudaSuccess)
    fail("E_BACKEND", std::string("the CUDA context failed earlier (") + cudaGetErrorName(cudaError_t(e)) +
                          "); the GPU is unusable in this process until it restarts");
}

// Lets the stream-ordered allocator keep freed workspace memory (up to 512 MiB) instead of
// returning it to the driver at every synchronization. Once per process, best effort.
inline void keep_pool_memory() {
  static std::once_flag once;
  std::call_once(once, [] {
    int dev = 0;
    cudaMemPool_t pool;
    if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess) {
      uint64_t keep = uint64_t(512) << 20;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    cudaGetLastError();
  });
}

// The stream one call runs on: the caller's, or one of our own. Ours is a blocking stream, so
// its work is ordered after what the legacy default stream queued before (an engine that wrote
// its cache there). When the call ends, ours is synchronized and destroyed; a caller's stream is
// synchronized only when the call fails, so no queued copy or kernel outlives the buffers it uses.
class Stream {
 public:
  explicit Stream(uintptr_t caller)
      : s_(reinterpret_cast<cudaStream_t>(caller)), owned_(caller == 0), unwinding_(std::uncaught_exceptions()) {
    require_healthy_context();
    keep_pool_memory();
    if (owned_) check(cudaStreamCreateWithFlags(&s_, cudaStreamDefault), "stream creation");
  }
  ~Stream() {
    if (owned_ || std::uncaught_exceptions() > unwinding_) cudaStreamSynchronize(s_);
    if (owned_) cudaStreamDestroy(s_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void sync() const { check(cudaStreamSynchronize(s_), "stream synchronize"); }

 private:
  cudaStream_t s_ = nullptr;
  bool owned_;
  int unwinding_;
};

// Device memory for one call, allocated and freed in stream order (no device-wide sync).
template <typename T>
class DeviceArray {
 public:
  DeviceArray(size_t n, const Stream& s) : n_(n), s_(s.get()) {
    if (n) check(cudaMallocAsync(reinterpret_cast<void**>(&p_), n * sizeof(T), s_), "device allocation");
  }
  ~DeviceArray() {
    if (p_) cudaFreeAsync(p_, s_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const T* src, size_t n) {
    if (n) check(cudaMemcpyAsync(p_, src, n * sizeof(T), cudaMemcpyHostToDevice, s_), "host-to-device copy");
  }
  void download(T* dst, size_t n) const {
    if (n) check(cudaMemcpyAsync(dst, p_, n * sizeof(T), cudaMemcpyDeviceToHost, s_), "device-to-host copy");
  }

 private:
  T* p_ = nullptr;
  size_t n_;
  cudaStream_t s_;
};

// Checks that a kernel launch was accepted.
inline void check_launch(cudaError_t e, const char* kernel) { check(e, kernel); }

}  // namespace kvtc::gpu
