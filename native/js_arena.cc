// N-API bindings of host memory: the arena that holds the host tier's encoded blobs (by handle),
// fast copies between typed arrays, and the CRC-32C every record carries.
#include "js_arena.h"

#include <cstring>
#include <memory>
#include <vector>

#include "crc32c.h"
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

// copyBytesAsync([[dst, src], ...]): the same copies on the addon's thread pool, so a store
// moving a whole cache (hundreds of MB for a long session of a large model) never holds the event
// loop for it. Resolves when every copy is done; the arrays must not change meanwhile.
class CopyWorker : public PromiseWorker {
 public:
  CopyWorker(Napi::Env env, const Napi::Array& pairs) : PromiseWorker(env) {
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
    for (const Copy& c : copies_)
      if (c.n) std::memmove(c.dst, c.src, c.n);
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
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
    return start(std::make_unique<CopyWorker>(info.Env(), info[0].As<Napi::Array>()));
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
