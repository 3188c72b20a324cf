// A CPU stand-in for the part of CUDA's WMMA API (<mma.h>, nvcuda::wmma) that kvtc's tensor-core
// GEMM uses: m16n16k8 TF32 operands with FP32 accumulators. See cuda_runtime.h for the emulator.
//
// On a GPU a fragment is spread over the 32 threads of a warp in an unspecified layout. Here
// every thread holds the whole tile (row-major in x[]): operand fragments are complete in every
// lane, while of an accumulator each lane owns every 32nd element, computes only those in
// mma_sync and writes only those in store_matrix_sync, so the warp does one product's work, not
// 32. Code that uses fragments only through this API and element-wise loops over x[] (the
// contract of the real API) gets the same results as on a device. The hardware's rules on
// operands are checked, since breaking them is silent on a device: pointers 256-bit aligned,
// ldm a multiple of 16 bytes; a violation fails the launch with cudaErrorMisalignedAddress. A
// TF32 multiply reads only the top 19 bits of each operand, as tensor cores do.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda_runtime.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

namespace detail {

template <class Use, int M, int N, int K>
struct tile;
template <int M, int N, int K>
struct tile<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct tile<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct tile<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

template <class T>
struct storage {
  using type = T;
};
template <>
struct storage<precision::tf32> {
  using type = float;
};

inline bool operand_ok(const void* p, unsigned ldm, size_t elem_bytes) {
  if (uintptr_t(p) % 32 == 0 && (ldm * elem_bytes) % 16 == 0) return true;
  kvtc_emu::fault(cudaErrorMisalignedAddress);
  return false;
}

// The lane of the running emulated thread within its warp.
inline int lane() {
  const dim3 t = kvtc_emu::g_threadIdx, b = kvtc_emu::g_blockDim;
  return int((t.x + b.x * (t.y + b.y * t.z)) % 32);
}

inline float tf32_operand(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u &= 0xffffe000u;
  std::memcpy(&v, &u, 4);
  return v;
}

}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  using element_type = typename detail::storage<T>::type;
  static constexpr int rows = detail::tile<Use, M, N, K>::rows, cols = detail::tile<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  element_type x[num_elements];
};

template <class Use, int M, int N, int K, class T, class Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const typename fragment<Use, M, N, K, T, Layout>::element_type* p,
                      unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  if (!detail::operand_ok(p, ldm, sizeof(*p))) return;
  for (int r = 0; r < F::rows; r++)
    for (int c = 0; c < F::cols; c++)
      f.x[r * F::cols + c] = std::is_same_v<Layout, col_major> ? p[size_t(c) * ldm + r] : p[size_t(r) * ldm + c];
}

// Each lane writes the accumulator elements it owns; together the warp writes the tile.
template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  if (!detail::operand_ok(p, ldm, sizeof(*p))) return;
  for (int t = detail::lane(); t < M * N; t += 32) {
    const int r = t / N, c = t % N;
    (layout == mem_col_major ? p[size_t(c) * ldm + r] : p[size_t(r) * ldm + c]) = f.x[t];
  }
}

template <class Use, int M, int N, int K, class T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, typename fragment<Use, M, N, K, T, Layout>::element_type v) {
  for (auto& e : f.x) e = v;
}

// d = a * b + c (d may be c), for the accumulator elements this lane owns.
template <int M, int N, int K, class LayoutA, class LayoutB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, precision::tf32, LayoutA>& a,
              const fragment<matrix_b, M, N, K, precision::tf32, LayoutB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  for (int t = detail::lane(); t < M * N; t += 32) {
    const int i = t / N, j = t % N;
    float s = c.x[t];
    for (int q = 0; q < K; q++) s += detail::tf32_operand(a.x[i * K + q]) * detail::tf32_operand(b.x[q * N + j]);
    d.x[t] = s;
  }
}

}  // namespace nvcuda::wmma
