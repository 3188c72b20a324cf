// The GEMM modes as the rest of the addon sees them (gpu.h): the mode in use, and one timed
// product of host arrays for tests and benchmarks.
#include <chrono>

#include "cuda_check.cuh"
#include "gemm.cuh"
#include "gpu.h"

namespace kvtc::gpu {

std::string gemm_path() {
  try {
    return gemm_mode_name(default_gemm_mode());
  } catch (const KvtcException& e) {
    return e.what();
  }
}

GemmRun run_gemm(const std::string& mode_name, int m, int n, int k, const float* a, const float* b, bool trans_b,
                 int repeats) {
  const GemmMode mode = gemm_mode_named(mode_name);
  if (m < 1 || n < 1 || k < 1 || repeats < 1) fail("E_LAYOUT", "GEMM sizes and repeats must be positive");
  Stream st{0};
  DeviceArray<float> A(size_t(m) * k, st), B(size_t(k) * n, st), C(size_t(m) * n, st);
  A.upload(a, A.size());
  B.upload(b, B.size());
  st.sync();
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < repeats; r++)
    check_launch(launch_gemm(mode, m, n, k, A.get(), k, B.get(), trans_b ? k : n, trans_b, C.get(), n, st.get()), "GEMM");
  st.sync();
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - t0;
  GemmRun out;
  out.seconds = took.count() / repeats;
  out.c.resize(C.size());
  C.download(out.c.data(), out.c.size());
  st.sync();
  return out;
}

}  // namespace kvtc::gpu
