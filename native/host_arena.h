// The host tier's memory: a process-wide registry of encoded blobs in native memory, page-locked
// (cudaHostAlloc) when a CUDA device is usable so restores can stream to the GPU, 64-byte aligned
// plain memory otherwise. Blobs are addressed by a numeric handle, so a worker thread can decode
// a blob in place — no copy crosses the JavaScript boundary. Byte accounting is exact: the sum of
// the sizes of live blocks. Thread-safe; shared by every worker thread of the process.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace kvtc {

struct ArenaBlock {
  uint8_t* data = nullptr;
  size_t size = 0;
  bool pinned = false;
  ArenaBlock(size_t n, bool try_pinned);  // throws E_CAPACITY when allocation fails
  ~ArenaBlock();
  ArenaBlock(const ArenaBlock&) = delete;
  ArenaBlock& operator=(const ArenaBlock&) = delete;
};

struct ArenaStats {
  uint64_t blocks = 0, bytes = 0, pinned_bytes = 0;
};

// Stores a copy of data[0..len) and returns its handle (never 0).
uint64_t arena_put(const uint8_t* data, size_t len);
// Takes ownership of an encoded blob (moves it into arena memory) and returns its handle.
uint64_t arena_put(std::vector<uint8_t>&& blob);
// The block for a handle; it stays valid for the holder even if freed meanwhile. Throws E_CORRUPT
// (a stale or unknown handle) when absent.
std::shared_ptr<const ArenaBlock> arena_get(uint64_t handle);
// Releases a handle; returns false when it was unknown.
bool arena_free(uint64_t handle);
ArenaStats arena_stats();
// Whether new blocks are page-locked (a CUDA device is usable).
bool arena_pinned();

}  // namespace kvtc
