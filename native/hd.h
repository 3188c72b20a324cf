// Marks the codec's per-element steps as callable from both the CPU codec and the CUDA kernels,
// so the two backends share one definition of quantization, packing, RoPE and rANS (and a blob
// written by either decodes on the other). Empty when compiled by a plain C++ compiler.
#pragma once

#if defined(__CUDACC__)
#define KVTC_HD __host__ __device__ __forceinline__
#else
#define KVTC_HD inline
#endif
