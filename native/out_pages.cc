#include "out_pages.h"

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace kvtc {

void prepare_output_pages(void* p, size_t bytes) {
#if defined(__linux__)
  static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  // Whole pages inside the range only: the pages at its ends may hold the caller's other data,
  // which the advice would not change either, but it need not reach them.
  const uintptr_t a = (uintptr_t(p) + page - 1) & ~(page - 1), b = (uintptr_t(p) + bytes) & ~(page - 1);
  if (b <= a) return;
  void* start = reinterpret_cast<void*>(a);
  // Both calls may fail (THP disabled, a kernel before 5.14, memory that is not anonymous); a
  // failure leaves the pages as they were, to be faulted in by the writes.
#ifdef MADV_HUGEPAGE
  madvise(start, b - a, MADV_HUGEPAGE);
#endif
  // Then fault the range in with one call rather than one trap per page: where huge pages are
  // not to be had this still saves about half of the fault time (Linux's value, for older
  // headers; an older kernel answers EINVAL).
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  madvise(start, b - a, MADV_POPULATE_WRITE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace kvtc
