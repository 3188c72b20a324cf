// Host-side helpers of the CUDA pipeline: CUDA statuses become typed KvtcExceptions (out of
// memory is E_CAPACITY, anything else E_BACKEND; never an abort), a kernel-launch macro that the
// CPU emulator (emu/cuda_runtime.h) can stand in for, a stream owned for one call, and
// stream-ordered device buffers.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "../native/errors.h"

#if defined(KVTC_CUDA_EMULATED)
#define KVTC_LAUNCH(kernel, grid, block, stream, ...) \
  kvtc_emu::launch((grid), (block), [&]() { kernel(__VA_ARGS__); })
#else
#define KVTC_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

namespace kvtc::gpu {

// Throws for a failed CUDA call; clears the runtime's last-error state first.
inline void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();
  fail(e == cudaErrorMemoryAllocation ? "E_CAPACITY" : "E_BACKEND",
       std::string("CUDA ") + what + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

// The stream one call runs on: the caller's, or a non-blocking one of our own that is
// synchronized and destroyed when the call ends (also on an exception).
class Stream {
 public:
  explicit Stream(uintptr_t caller) : s_(reinterpret_cast<cudaStream_t>(caller)), owned_(caller == 0) {
    if (owned_) check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "stream creation");
  }
  ~Stream() {
    if (owned_) {
      cudaStreamSynchronize(s_);
      cudaStreamDestroy(s_);
    }
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void sync() const { check(cudaStreamSynchronize(s_), "stream synchronize"); }

 private:
  cudaStream_t s_ = nullptr;
  bool owned_;
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
