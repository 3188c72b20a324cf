// The GEMM on TF32 tensor cores (WMMA m16n16k8, FP32 accumulators; sm_80 and later).
//
// A block of four warps computes a 64 x 64 tile of C, each warp a 32 x 32 quarter as 2 x 2
// fragments, stepping through k 32 at a time with both operand tiles staged in shared memory.
// TF32 keeps 10 of FP32's 23 mantissa bits. With `split`, each operand x becomes hi + lo, both
// TF32 (hi = x rounded, lo = the rest rounded), and C sums lo*hi + hi*lo + hi*hi: the dropped lo*lo
// term is below FP32 rounding, so results match an FP32 GEMM to float accuracy while the
// products still run on tensor cores (3 MMAs instead of 1).
#include <mma.h>

#include <type_traits>

#include "cuda_check.cuh"
#include "gemm_kernels.cuh"

namespace kvtc::gpu {
namespace {

using namespace nvcuda;

constexpr int kBM = kGemmRowTile, kBN = 64, kBK = 32, kThreads = 128;
// Shared-memory row strides in floats. WMMA needs multiples of 4 floats and fragment pointers
// 32-byte aligned (true at every 16-row, 8-column offset with these strides); the 4 extra floats
// spread a column's rows over different banks.
constexpr int kLdA = kBK + 4;   // A tile, [kBM][kBK]
constexpr int kLdBn = kBK + 4;  // op(B) tile stored n-major, [kBN][kBK] (trans_b: B's own rows)
constexpr int kLdBk = kBN + 4;  // op(B) tile stored k-major, [kBK][kBN]
constexpr int kLdC = kBN + 4;   // output staging, [kBM][kBN]
constexpr int kFrag = 16, kStep = 8;

// x rounded to nearest (ties away from zero) at TF32 precision, with the dropped bits zero, so
// x - tf32_round(x) is exact. Done on the bits rather than with __float_to_tf32 so the split is
// exactly defined; infinities and NaNs pass through.
__device__ __forceinline__ float tf32_round(float x) {
  const unsigned u = __float_as_uint(x);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  return __uint_as_float((u + 0x1000u) & 0xffffe000u);
}

// Rounds a loaded fragment to TF32 in place; with split, lo gets the rounded remainder.
template <bool kSplit, typename Frag>
__device__ __forceinline__ void to_tf32(Frag& hi, Frag& lo) {
  for (int t = 0; t < hi.num_elements; t++) {
    const float v = hi.x[t];
    const float h = tf32_round(v);
    hi.x[t] = h;
    if (kSplit) lo.x[t] = tf32_round(v - h);
  }
}

template <bool kTransB, bool kSplit>
__global__ void __launch_bounds__(kThreads)
    gemm_tf32_kernel(int m, int n, int k, const float* A, int lda, const float* B, int ldb, float* C, int ldc) {
  using LayoutB = std::conditional_t<kTransB, wmma::col_major, wmma::row_major>;
  using FragA = wmma::fragment<wmma::matrix_a, kFrag, kFrag, kStep, wmma::precision::tf32, wmma::row_major>;
  using FragB = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kStep, wmma::precision::tf32, LayoutB>;
  using FragC = wmma::fragment<wmma::accumulator, kFrag, kFrag, kStep, float>;
  __shared__ __align__(32) float As[kBM * kLdA];
  __shared__ __align__(32) float Bs[kTransB ? kBN * kLdBn : kBK * kLdBk];
  __shared__ __align__(32) float Cs[kBM * kLdC];

  const int tid = int(threadIdx.x), warp = tid / 32;
  const int row0 = int(blockIdx.y) * kBM, col0 = int(blockIdx.x) * kBN;
  const int wr = (warp / 2) * 32, wc = (warp % 2) * 32;  // the warp's quarter of the tile
  FragC acc[2][2];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.0f);

  for (int k0 = 0; k0 < k; k0 += kBK) {
    // Consecutive threads read consecutive addresses of A and B; out-of-range elements are zero.
    for (int e = tid; e < kBM * kBK; e += kThreads) {
      const int r = e / kBK, c = e % kBK, gr = row0 + r, gc = k0 + c;
      As[r * kLdA + c] = gr < m && gc < k ? A[size_t(gr) * lda + gc] : 0.0f;
    }
    for (int e = tid; e < kBN * kBK; e += kThreads) {
      if (kTransB) {  // B is [n x k]: its rows are op(B)'s columns, stored as they come
        const int r = e / kBK, c = e % kBK, gr = col0 + r, gc = k0 + c;
        Bs[r * kLdBn + c] = gr < n && gc < k ? B[size_t(gr) * ldb + gc] : 0.0f;
      } else {  // B is [k x n]
        const int r = e / kBN, c = e % kBN, gr = k0 + r, gc = col0 + c;
        Bs[r * kLdBk + c] = gr < k && gc < n ? B[size_t(gr) * ldb + gc] : 0.0f;
      }
    }
    __syncthreads();
    for (int kk = 0; kk < kBK; kk += kStep) {
      FragA a_hi[2], a_lo[2];
      FragB b_hi[2], b_lo[2];
      for (int i = 0; i < 2; i++) {
        wmma::load_matrix_sync(a_hi[i], As + (wr + i * kFrag) * kLdA + kk, kLdA);
        to_tf32<kSplit>(a_hi[i], a_lo[i]);
      }
      for (int j = 0; j < 2; j++) {
        if (kTransB)
          wmma::load_matrix_sync(b_hi[j], Bs + (wc + j * kFrag) * kLdBn + kk, kLdBn);
        else
          wmma::load_matrix_sync(b_hi[j], Bs + kk * kLdBk + wc + j * kFrag, kLdBk);
        to_tf32<kSplit>(b_hi[j], b_lo[j]);
      }
      for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
          if (kSplit) {  // the 3xTF32 correction terms
            wmma::mma_sync(acc[i][j], a_lo[i], b_hi[j], acc[i][j]);
            wmma::mma_sync(acc[i][j], a_hi[i], b_lo[j], acc[i][j]);
          }
          wmma::mma_sync(acc[i][j], a_hi[i], b_hi[j], acc[i][j]);
        }
    }
    __syncthreads();
  }

  // Through shared memory, so edge tiles and any ldc are written element by element.
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++)
      wmma::store_matrix_sync(Cs + (wr + i * kFrag) * kLdC + wc + j * kFrag, acc[i][j], kLdC, wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < kBM * kBN; e += kThreads) {
    const int r = e / kBN, c = e % kBN, gr = row0 + r, gc = col0 + c;
    if (gr < m && gc < n) C[size_t(gr) * ldc + gc] = Cs[r * kLdC + c];
  }
}

template <bool kTransB, bool kSplit>
cudaError_t launch(int m, int n, int k, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                   cudaStream_t s) {
  const dim3 grid((n + kBN - 1) / kBN, (m + kBM - 1) / kBM);
  auto kernel = gemm_tf32_kernel<kTransB, kSplit>;
  KVTC_LAUNCH(kernel, grid, dim3(kThreads), s, m, n, k, A, lda, B, ldb, C, ldc);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_gemm_tf32(bool split, int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                             bool trans_b, float* C, int ldc, cudaStream_t s) {
  auto run = trans_b ? (split ? launch<true, true> : launch<true, false>) : (split ? launch<false, true> : launch<false, false>);
  return run(m, n, k, A, lda, B, ldb, C, ldc, s);
}

}  // namespace kvtc::gpu
