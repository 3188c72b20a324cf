// N-API bindings of host memory: the arena that holds the host tier's encoded blobs (by handle),
// fast copies between typed arrays, and the CRC-32C every record carries.
#include "js_arena.h"

#include <cstring>

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
  exports.Set("arenaPut", Napi::Function::New(env, ArenaPut));
  exports.Set("arenaRead", Napi::Function::New(env, ArenaRead));
  exports.Set("arenaFree", Napi::Function::New(env, ArenaFree));
  exports.Set("arenaStats", Napi::Function::New(env, ArenaStatsJs));
  exports.Set("crc32c", Napi::Function::New(env, Crc32c));  // record checksums (disk tier, raw format)
}

}  // namespace kvtc
