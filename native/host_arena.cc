#include "host_arena.h"

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "errors.h"

#ifdef KVTC_WITH_CUDA
#include "../cuda/device.cuh"
#endif

namespace kvtc {
namespace {

struct Registry {
  std::mutex mu;
  std::unordered_map<uint64_t, std::shared_ptr<const ArenaBlock>> blocks;
  uint64_t next = 1;
  ArenaStats stats;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: worker threads may outlive main's statics
  return *r;
}

bool cuda_usable() {
#ifdef KVTC_WITH_CUDA
  static const bool usable = [] {
    int n = 0;
    char reason[128];
    kvtc_cuda_device_count(&n, reason, sizeof(reason));
    return n > 0;
  }();
  return usable;
#else
  return false;
#endif
}

uint64_t insert(std::shared_ptr<const ArenaBlock> b) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  const uint64_t h = r.next++;
  r.stats.blocks++;
  r.stats.bytes += b->size;
  if (b->pinned) r.stats.pinned_bytes += b->size;
  r.blocks.emplace(h, std::move(b));
  return h;
}

#ifdef KVTC_WITH_CUDA
// Page-locked blocks are released on a thread of their own: cudaFreeHost waits for the whole
// device to go idle, and blocks are freed from the JavaScript thread (arenaFree), which must
// never wait on the GPU, nor on an engine's kernels sharing it.
class PinnedReaper {
 public:
  static PinnedReaper& get() {
    static PinnedReaper* r = new PinnedReaper();  // never destroyed, like its thread (detached)
    return *r;
  }
  void release(void* p) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(p);
    }
    cv_.notify_one();
  }

 private:
  PinnedReaper() { std::thread([this] { run(); }).detach(); }
  void run() {
    for (;;) {
      std::vector<void*> batch;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !queue_.empty(); });
        batch.swap(queue_);
      }
      for (void* p : batch) kvtc_cuda_host_free(p);
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<void*> queue_;
};
#endif

}  // namespace

ArenaBlock::ArenaBlock(size_t n, bool try_pinned) : size(n) {
  const size_t alloc = n == 0 ? 64 : (n + 63) / 64 * 64;
#ifdef KVTC_WITH_CUDA
  if (try_pinned && kvtc_cuda_host_alloc(reinterpret_cast<void**>(&data), alloc) == 0) {
    pinned = true;
    return;
  }
#else
  (void)try_pinned;
#endif
  data = static_cast<uint8_t*>(std::aligned_alloc(64, alloc));
  if (!data) fail("E_CAPACITY", "host tier: cannot allocate " + std::to_string(n) + " bytes");
}

ArenaBlock::~ArenaBlock() {
#ifdef KVTC_WITH_CUDA
  if (pinned) {
    PinnedReaper::get().release(data);
    return;
  }
#endif
  std::free(data);
}

uint64_t arena_put(const uint8_t* data, size_t len) {
  auto b = std::make_shared<ArenaBlock>(len, cuda_usable());
  if (len) std::memcpy(b->data, data, len);
  return insert(std::move(b));
}

uint64_t arena_put(std::vector<uint8_t>&& blob) {
  const uint64_t h = arena_put(blob.data(), blob.size());
  std::vector<uint8_t>().swap(blob);
  return h;
}

std::shared_ptr<const ArenaBlock> arena_get(uint64_t handle) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.blocks.find(handle);
  if (it == r.blocks.end()) fail("E_CORRUPT", "host tier: unknown blob handle " + std::to_string(handle));
  return it->second;
}

bool arena_free(uint64_t handle) {
  std::shared_ptr<const ArenaBlock> victim;  // freed outside the lock
  Registry& r = registry();
  {
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.blocks.find(handle);
    if (it == r.blocks.end()) return false;
    victim = std::move(it->second);
    r.blocks.erase(it);
    r.stats.blocks--;
    r.stats.bytes -= victim->size;
    if (victim->pinned) r.stats.pinned_bytes -= victim->size;
  }
  return true;
}

ArenaStats arena_stats() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.stats;
}

bool arena_pinned() { return cuda_usable(); }

}  // namespace kvtc
