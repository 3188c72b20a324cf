#include <cuda_runtime.h>

#include <cstdio>

#include "device.cuh"

extern "C" int kvtc_cuda_device_count(int* count, char* reason, size_t reason_len) {
  *count = 0;
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    // Static cudart reports a missing driver here instead of failing to load the addon.
    if (reason && reason_len) std::snprintf(reason, reason_len, "%s: %s", cudaGetErrorName(err), cudaGetErrorString(err));
    cudaGetLastError();  // clear the sticky error state
    return 0;
  }
  if (n == 0) {
    if (reason && reason_len) std::snprintf(reason, reason_len, "no CUDA device present");
    return 0;
  }
  // The kernels are built for compute capability 8.0 and later (TF32 tensor cores): an older
  // device has no code to run, so it does not count.
  int major = 0, minor = 0, dev = 0;
  cudaGetDevice(&dev);
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
    cudaGetLastError();
    if (reason && reason_len) std::snprintf(reason, reason_len, "the compute capability of CUDA device %d is unknown", dev);
    return 0;
  }
  if (major < 8) {
    if (reason && reason_len)
      std::snprintf(reason, reason_len, "CUDA device %d has compute capability %d.%d; kvtc's kernels need 8.0 or later",
                    dev, major, minor);
    return 0;
  }
  *count = n;
  return 0;
}

extern "C" int kvtc_cuda_host_alloc(void** ptr, size_t bytes) {
  void* p = nullptr;
  if (cudaHostAlloc(&p, bytes, cudaHostAllocDefault) != cudaSuccess) {
    cudaGetLastError();
    return 1;
  }
  *ptr = p;
  return 0;
}

extern "C" int kvtc_cuda_host_free(void* ptr) { return cudaFreeHost(ptr) == cudaSuccess ? 0 : 1; }
