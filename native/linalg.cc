#include "linalg.h"

#include "gemm.h"

namespace kvtc {

const char* linalg_path() {
#ifdef KVTC_HAVE_OPENBLAS
  return "openblas";
#else
  return simd_name(gemm_path());
#endif
}

}  // namespace kvtc
