// CUDA device discovery for buildInfo() and backend selection. Plain C ABI so the host C++
// compiler never needs CUDA headers. Never aborts: with no driver or no device it returns 0
// devices and a reason.
#pragma once
#include <cstddef>

extern "C" {
// count: usable devices (0 when none); reason: why none, NUL-terminated, at most reason_len bytes.
// Returns 0 on success (including "no device"), non-zero on an unexpected CUDA error.
int kvtc_cuda_device_count(int* count, char* reason, size_t reason_len);
// Page-locked host memory (cudaHostAlloc). Return 0 on success; *ptr untouched on failure.
int kvtc_cuda_host_alloc(void** ptr, size_t bytes);
int kvtc_cuda_host_free(void* ptr);
}
