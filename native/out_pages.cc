#include "out_pages.h"

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace kvtc {

void prepare_output_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  // Whole pages inside the range only: the pages at its ends may hold the caller's other data
  // (the advice would not change that either, but it need not reach them).
  const uintptr_t a = (uintptr_t(p) + page - 1) & ~(page - 1), b = (uintptr_t(p) + bytes) & ~(page - 1);
  if (b <= a) return;
  // May fail (THP disabled, memory that is not anonymous): the pages are then faulted in 4 KiB
  // at a time as before. Pages already present are not touched, so the call costs nothing on a
  // buffer decoded into before. (MADV_POPULATE_WRITE as well was measured and left out: it
  // saves nothing more where huge pages are granted, and costs 12-20 ms per 268 MB walking the
  // pages of a buffer that is already populated.)
  madvise(reinterpret_cast<void*>(a), b - a, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace kvtc
