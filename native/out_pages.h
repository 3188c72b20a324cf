// Output pages of a decode. A decoded cache lands in buffers the caller has just allocated
// (fresh anonymous memory, hundreds of MB for a long context): written 4 KiB page by page, every
// page costs a fault and a zero fill, ~30% of an int8 decode on a 537 MB cache. Asking for
// transparent huge pages on the range before writing turns 512 faults into one (the zero fill
// stays: ~10% of what the faults cost).
#pragma once
#include <cstddef>

namespace kvtc {

// Advises the kernel that [p, p + bytes) is about to be written in full (caller-owned memory,
// not retained). Advisory only: where the system does not allow it (no THP, another OS), it
// does nothing and the decode is as before. Never changes the contents of the range.
void prepare_output_pages(void* p, size_t bytes);

}  // namespace kvtc
