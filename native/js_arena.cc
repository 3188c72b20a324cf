// N-API bindings of host memory: the arena that holds the host tier's encoded blobs (by handle),
// fast copies between typed arrays, and the CRC-32C every record carries.
#include "js_arena.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "crc32c.h"
#include "half.h"
#include "host_arena.h"
#include "js_util.h"

namespace kvtc {
namespace {

// ---- host arena ----------------------------------------------------------------------------

uint64_t handle_of(const Napi::Value& v) {
  if (!v.IsNumber()) fail("E_LAYOUT", "arena handle must be a number");
  return uint64_t(v.As<Napi::Number>().Int64Value());
}

Napi::Value ArenaPut(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t len;
    const uint8_t* p = bytes_of(info[0], len, "blob");
    return Napi::Number::New(info.Env(), double(arena_put(p, len)));
  });
}

Napi::Value ArenaRead(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto b = arena_get(handle_of(info[0]));
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), b->size);
    std::memcpy(out.Data(), b->data, b->size);
    return out;
  });
}

Napi::Value ArenaFree(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::Boolean::New(info.Env(), arena_free(handle_of(info[0]))); });
}

Napi::Value ArenaStatsJs(const Napi::CallbackInfo& info) {
  ArenaStats s = arena_stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("blocks", double(s.blocks));
  o.Set("bytes", double(s.bytes));
  o.Set("pinnedBytes", double(s.pinned_bytes));
  o.Set("pinned", arena_pinned());
  return o;
}

// copyBytes(dst, src): memcpy between any two typed arrays of equal byte length. V8 copies
// to or from SharedArrayBuffers element by element; the store moves whole caches, so it asks
// for a plain memcpy (synchronous: ~0.1 ms per MB).
Napi::Value CopyBytes(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t dn = 0, sn = 0;
    void* d = view_data(info[0], dn);
    const void* s = view_data(info[1], sn);
    if (dn != sn) fail("E_LAYOUT", "copyBytes: byte lengths differ");
    if (dn) std::memmove(d, s, dn);
    return info.Env().Undefined();
  });
}

// Index of the first NaN or Inf among n values of `dtype` at p (raw bits: an all-ones exponent),
// or n when there is none. The reduction over a block is branch-free so it vectorizes; only a
// block that holds one is searched element by element.
template <typename U>
size_t first_non_finite_bits(const U* p, size_t n, U exp_mask) {
  constexpr size_t kBlock = 1024;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = std::min(n, b + kBlock);
    U hit = 0;
    for (size_t i = b; i < e; i++) hit |= U((p[i] & exp_mask) == exp_mask);
    if (hit)
      for (size_t i = b; i < e; i++)
        if ((p[i] & exp_mask) == exp_mask) return i;
  }
  return n;
}

size_t first_non_finite(const void* p, size_t bytes, DType dtype) {
  switch (dtype) {
    case DType::F32:
      return first_non_finite_bits(static_cast<const uint32_t*>(p), bytes / 4, uint32_t(0x7f800000u));
    case DType::F16:
      return first_non_finite_bits(static_cast<const uint16_t*>(p), bytes / 2, uint16_t(0x7c00u));
    case DType::BF16:
      return first_non_finite_bits(static_cast<const uint16_t*>(p), bytes / 2, uint16_t(0x7f80u));
  }
  return bytes;
}

// copyBytesAsync([[dst, src], ...], scan?): the same copies on the addon's thread pool, so a store
// moving a whole cache (hundreds of MB for a long session of a large model) never holds the event
// loop for it. Resolves when every copy is done; the arrays must not change meanwhile.
// scan = { dtype: 0|1|2, pairs: n }: the first n destinations are also checked for NaN/Inf, block
// by block right after each block is copied (while it is in cache: one pass over memory, not two),
// and the promise resolves with the first one found as { pair, element } (element: index in
// values of that dtype), or null.
class CopyWorker : public PromiseWorker {
 public:
  CopyWorker(Napi::Env env, const Napi::Array& pairs, const Napi::Value& scan) : PromiseWorker(env) {
    if (scan.IsObject()) {
      const Napi::Object o = scan.As<Napi::Object>();
      scan_dtype_ = read_dtype(o.Get("dtype"));
      const Napi::Value n = o.Get("pairs");
      if (!n.IsNumber()) fail("E_INTERNAL", "copyBytesAsync: scan.pairs must be a number");
      scan_pairs_ = n.As<Napi::Number>().Uint32Value();
      scanning_ = true;
    }
    for (uint32_t i = 0; i < pairs.Length(); i++) {
      const Napi::Value p = pairs.Get(i);
      if (!p.IsArray() || p.As<Napi::Array>().Length() != 2) fail("E_INTERNAL", "copyBytesAsync takes [dst, src] pairs");
      const Napi::Array pair = p.As<Napi::Array>();
      size_t dn = 0, sn = 0;
      void* d = view_data(pair.Get(0u), dn);
      const void* s = view_data(pair.Get(1u), sn);
      if (dn != sn) fail("E_LAYOUT", "copyBytesAsync: byte lengths differ");
      Keep(pair.Get(0u));
      Keep(pair.Get(1u));
      copies_.push_back({d, s, dn});
    }
  }
  void Run() override {
    for (size_t k = 0; k < copies_.size(); k++) {
      const Copy& c = copies_[k];
      if (!scanning_ || k >= scan_pairs_ || found_pair_ >= 0) {
        if (c.n) std::memmove(c.dst, c.src, c.n);
        continue;
      }
      // 64 KiB blocks (a whole number of values of any dtype): copied, then scanned from L2.
      constexpr size_t kBlock = size_t(1) << 16;
      const size_t vb = size_t(dtype_bytes(scan_dtype_));
      for (size_t off = 0; off < c.n; off += kBlock) {
        const size_t len = std::min(kBlock, c.n - off);
        uint8_t* d = static_cast<uint8_t*>(c.dst) + off;
        std::memmove(d, static_cast<const uint8_t*>(c.src) + off, len);
        if (found_pair_ >= 0) continue;
        const size_t at = first_non_finite(d, len - len % vb, scan_dtype_);
        if (at < len / vb) {
          found_pair_ = int64_t(k);
          found_element_ = off / vb + at;
        }
      }
    }
  }
  Napi::Value Result(Napi::Env env) override {
    if (!scanning_) return env.Undefined();
    if (found_pair_ < 0) return env.Null();
    Napi::Object o = Napi::Object::New(env);
    o.Set("pair", double(found_pair_));
    o.Set("element", double(found_element_));
    return o;
  }

 private:
  bool scanning_ = false;
  DType scan_dtype_ = DType::F32;
  uint32_t scan_pairs_ = 0;
  int64_t found_pair_ = -1;
  size_t found_element_ = 0;
  struct Copy {
    void* dst;
    const void* src;
    size_t n;
  };
  std::vector<Copy> copies_;
};

Napi::Value CopyBytesAsync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (!info[0].IsArray()) fail("E_INTERNAL", "copyBytesAsync takes an array of [dst, src] pairs");
    return start(std::make_unique<CopyWorker>(info.Env(), info[0].As<Napi::Array>(), info[1]));
  });
}

Napi::Value Crc32c(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t len;
    const uint8_t* p = bytes_of(info[0], len, "data");
    return Napi::Number::New(info.Env(), crc32c(0, p, len));
  });
}

}  // namespace

void register_arena(Napi::Env env, Napi::Object exports) {
  exports.Set("copyBytes", Napi::Function::New(env, CopyBytes));
  exports.Set("copyBytesAsync", Napi::Function::New(env, CopyBytesAsync));
  exports.Set("arenaPut", Napi::Function::New(env, ArenaPut));
  exports.Set("arenaRead", Napi::Function::New(env, ArenaRead));
  exports.Set("arenaFree", Napi::Function::New(env, ArenaFree));
  exports.Set("arenaStats", Napi::Function::New(env, ArenaStatsJs));
  exports.Set("crc32c", Napi::Function::New(env, Crc32c));  // record checksums (disk tier, raw format)
}

}  // namespace kvtc
