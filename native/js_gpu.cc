// N-API bindings of the CUDA backend's device-address API (exports.gpu, CUDA builds only):
// encoding a cache that lives in device memory, decoding straight into device buffers, and the
// device memory the store's device tier owns. Device addresses are bigints. Every CUDA call runs
// in an AsyncWorker (the first one creates the CUDA context, which can take seconds), so the
// main thread never waits on the device.
#include "js_gpu.h"

#ifdef KVTC_WITH_CUDA
#include <cstring>

#include "../cuda/gpu.h"
#include "js_util.h"

namespace kvtc {
namespace {

uint64_t address_of(const Napi::Value& v, const std::string& what) {
  if (!v.IsBigInt()) fail("E_LAYOUT", what + " must be a bigint device address");
  bool lossless = false;
  const uint64_t a = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) fail("E_LAYOUT", what + " is not a valid device address");
  return a;
}

std::vector<uint64_t> addresses_of(const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) fail("E_LAYOUT", what + " must be an array of bigint device addresses");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<uint64_t> out;
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(address_of(a.Get(i), what + "[" + std::to_string(i) + "]"));
  return out;
}

uint64_t stream_value(const Napi::Value& s) { return s.IsUndefined() || s.IsNull() ? 0 : address_of(s, "stream"); }

uint64_t stream_of(const Napi::Object& o) { return stream_value(o.Get("stream")); }

Napi::Value bigint(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }

// A DeviceKvCache as the TypeScript side passes it: { tokens, dtype, keys: bigint[],
// values: bigint[], positions?: Int32Array, stream?: bigint }. Positions are copied (the view
// points into this object, which must not move once read).
struct DeviceCacheArg {
  gpu::DeviceCacheView view;
  std::vector<int32_t> positions;
  uint64_t stream = 0;

  explicit DeviceCacheArg(const Napi::Object& cache) {
    const double tokens = cache.Get("tokens").As<Napi::Number>().DoubleValue();
    if (!(tokens >= 0 && tokens <= 2147483647.0) || tokens != double(uint32_t(tokens)))
      fail("E_LAYOUT", "cache.tokens must be a non-negative integer");
    view.tokens = uint32_t(tokens);
    view.dtype = read_dtype(cache.Get("dtype"));
    view.keys = addresses_of(cache.Get("keys"), "cache.keys");
    view.values = addresses_of(cache.Get("values"), "cache.values");
    stream = stream_of(cache);
    const Napi::Value pos = cache.Get("positions");
    if (!pos.IsUndefined()) {
      if (!pos.IsTypedArray() || pos.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
          pos.As<Napi::Int32Array>().ElementLength() != view.tokens)
        fail("E_LAYOUT", "cache.positions must be an Int32Array with one entry per token");
      positions.assign(pos.As<Napi::Int32Array>().Data(), pos.As<Napi::Int32Array>().Data() + view.tokens);
      view.positions = positions.data();
    }
  }
  DeviceCacheArg(const DeviceCacheArg&) = delete;
  DeviceCacheArg& operator=(const DeviceCacheArg&) = delete;
};

// encodeDevice(profile, DeviceKvCache, entropy, toArena)
class EncodeDeviceWorker : public PromiseWorker {
 public:
  EncodeDeviceWorker(Napi::Env env, ProfilePtr pr, const Napi::Object& cache, bool entropy, bool to_arena)
      : PromiseWorker(env), profile_(std::move(pr)), cache_(cache), out_(to_arena) {
    opts_.entropy = entropy;
  }
  void Run() override { out_.Take(gpu::encode_device(*profile_, cache_.view, opts_, cache_.stream)); }
  Napi::Value Result(Napi::Env env) override { return out_.Result(env); }

 private:
  ProfilePtr profile_;
  DeviceCacheArg cache_;
  EncodeOptions opts_;
  EncodedBlob out_;
};

// scanNonFinite(DeviceKvCache, rowValues): the first NaN/Inf as { stream, layer, token }, or null.
class ScanDeviceWorker : public PromiseWorker {
 public:
  ScanDeviceWorker(Napi::Env env, const Napi::Object& cache, uint32_t rv) : PromiseWorker(env), cache_(cache), rv_(rv) {}
  void Run() override { at_ = gpu::find_non_finite_device(cache_.view, rv_, cache_.stream); }
  Napi::Value Result(Napi::Env env) override {
    if (!at_.found) return env.Null();
    Napi::Object o = Napi::Object::New(env);
    o.Set("stream", at_.stream == 0 ? "keys" : "values");
    o.Set("layer", at_.layer);
    o.Set("token", at_.token);
    return o;
  }

 private:
  DeviceCacheArg cache_;
  uint32_t rv_;
  gpu::NonFiniteAt at_;
};

// decodeToDevice(profile, source, { keys: bigint[], values: bigint[], stream? }, positions)
class DecodeToDeviceWorker : public PromiseWorker {
 public:
  DecodeToDeviceWorker(Napi::Env env, ProfilePtr pr, const Napi::Value& source, const Napi::Object& target,
                       const Napi::Value& positions)
      : PromiseWorker(env), profile_(std::move(pr)) {
    src_.Bind(source, [this](Napi::Value v) { Keep(v); });
    keys_ = addresses_of(target.Get("keys"), "target.keys");
    values_ = addresses_of(target.Get("values"), "target.values");
    stream_ = stream_of(target);
    if (!positions.IsTypedArray() || positions.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      fail("E_INTERNAL", "decodeToDevice needs an Int32Array for the positions");
    Napi::Int32Array p = positions.As<Napi::Int32Array>();
    pp_ = p.Data();
    plen_ = p.ElementLength();
    Keep(positions);
  }
  void Run() override {
    BlobHeader h = src_.Header(false);
    check_blob(*profile_, h);
    require_corrupt(plen_ == h.tokens, "blob changed during decoding");
    gpu::decode_to_device(*profile_, src_.data(), h, keys_, values_, pp_, stream_);
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  ProfilePtr profile_;
  BlobSource src_;
  std::vector<uint64_t> keys_, values_;
  uint64_t stream_ = 0;
  int32_t* pp_ = nullptr;
  size_t plen_ = 0;
};

// A device-memory operation run off the main thread: fn returns the promise's value (a device
// address, or 0 for undefined).
class DeviceMemoryWorker : public PromiseWorker {
 public:
  DeviceMemoryWorker(Napi::Env env, std::function<uint64_t()> fn, bool returns_address)
      : PromiseWorker(env), fn_(std::move(fn)), returns_address_(returns_address) {}
  using PromiseWorker::Keep;
  void Run() override { result_ = fn_(); }
  Napi::Value Result(Napi::Env env) override { return returns_address_ ? bigint(env, result_) : env.Undefined(); }

 private:
  std::function<uint64_t()> fn_;
  bool returns_address_;
  uint64_t result_ = 0;
};

Napi::Value run_device(const Napi::CallbackInfo& info, std::function<uint64_t()> fn, bool returns_address,
                       std::initializer_list<Napi::Value> keep = {}) {
  auto w = std::make_unique<DeviceMemoryWorker>(info.Env(), std::move(fn), returns_address);
  for (const Napi::Value& v : keep) w->Keep(v);
  return start(std::move(w));
}

size_t byte_count(const Napi::Value& v, const char* what) {
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || d != double(uint64_t(d)))
    fail("E_LAYOUT", std::string(what) + " must be a non-negative integer byte count");
  return size_t(d);
}

Napi::Value EncodeDevice(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return start(std::make_unique<EncodeDeviceWorker>(info.Env(), profile_of(info[0]), info[1].As<Napi::Object>(),
                                                      info[2].ToBoolean(), info[3].ToBoolean()));
  });
}

Napi::Value ScanNonFiniteDevice(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return start(std::make_unique<ScanDeviceWorker>(info.Env(), info[0].As<Napi::Object>(),
                                                    info[1].As<Napi::Number>().Uint32Value()));
  });
}

Napi::Value DecodeToDevice(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return start(std::make_unique<DecodeToDeviceWorker>(info.Env(), profile_of(info[0]), info[1],
                                                        info[2].As<Napi::Object>(), info[3]));
  });
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const size_t bytes = byte_count(info[0], "bytes");
    return run_device(info, [bytes] { return gpu::device_alloc(bytes); }, true);
  });
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const uint64_t p = address_of(info[0], "address");
    const uint64_t stream = stream_value(info[1]);
    return run_device(info, [p, stream] { return gpu::device_free(p, stream), uint64_t(0); }, false);
  });
}

// copyToDevice(dst: bigint, src: TypedArray, stream?) and copyToHost(dst: TypedArray, src: bigint, stream?).
Napi::Value CopyToDevice(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const uint64_t dst = address_of(info[0], "destination");
    size_t bytes = 0;
    const void* src = view_data(info[1], bytes);
    const uint64_t stream = stream_value(info[2]);
    return run_device(
        info,
        [=] {
          gpu::require_device_pointer(dst, "destination", 1, bytes);
          return gpu::copy_to_device(dst, src, bytes, stream), uint64_t(0);
        },
        false, {info[1]});
  });
}

Napi::Value CopyToHost(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t bytes = 0;
    void* dst = view_data(info[0], bytes);
    const uint64_t src = address_of(info[1], "source");
    const uint64_t stream = stream_value(info[2]);
    return run_device(
        info,
        [=] {
          gpu::require_device_pointer(src, "source", 1, bytes);
          return gpu::copy_to_host(dst, src, bytes, stream), uint64_t(0);
        },
        false, {info[0]});
  });
}

// copyFromArena(dst: bigint, handle): a host-arena block (page-locked when a device is usable) to
// the device: the ceiling of a restore from the host tier.
Napi::Value CopyFromArena(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const uint64_t dst = address_of(info[0], "destination");
    std::shared_ptr<const ArenaBlock> block = arena_get(uint64_t(info[1].As<Napi::Number>().Int64Value()));
    return run_device(
        info,
        [dst, block] {
          gpu::require_device_pointer(dst, "destination", 1, block->size);
          return gpu::copy_to_device(dst, block->data, block->size), uint64_t(0);
        },
        false);
  });
}

// copyOnDevice(dst: bigint, src: bigint, bytes, stream?)
Napi::Value CopyOnDevice(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const uint64_t dst = address_of(info[0], "destination"), src = address_of(info[1], "source");
    const size_t bytes = byte_count(info[2], "bytes");
    const uint64_t stream = stream_value(info[3]);
    return run_device(
        info,
        [=] {
          gpu::require_device_pointer(dst, "destination", 1, bytes);
          gpu::require_device_pointer(src, "source", 1, bytes);
          return gpu::copy_on_device(dst, src, bytes, stream), uint64_t(0);
        },
        false);
  });
}

class MemoryInfoWorker : public PromiseWorker {
 public:
  using PromiseWorker::PromiseWorker;
  void Run() override { m_ = gpu::memory_info(); }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("free", double(m_.free));
    o.Set("total", double(m_.total));
    return o;
  }

 private:
  gpu::MemoryInfo m_;
};

Napi::Value MemoryInfo(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return start(std::make_unique<MemoryInfoWorker>(info.Env())); });
}

// gemm(mode, a: Float32Array, b: Float32Array, { m, n, k, transB, repeats }) resolves to
// { c: Float32Array, seconds }: the projection GEMM alone (tests, benchmarks).
class GemmWorker : public PromiseWorker {
 public:
  GemmWorker(Napi::Env env, const Napi::CallbackInfo& info) : PromiseWorker(env) {
    if (!info[0].IsString()) fail("E_OPTIONS", "gemm mode must be a string");
    mode_ = info[0].As<Napi::String>().Utf8Value();
    if (!info[3].IsObject()) fail("E_LAYOUT", "gemm needs the sizes { m, n, k }");
    const Napi::Object o = info[3].As<Napi::Object>();
    m_ = dim(o, "m");
    n_ = dim(o, "n");
    k_ = dim(o, "k");
    repeats_ = o.Has("repeats") ? dim(o, "repeats") : 1;
    trans_b_ = o.Get("transB").ToBoolean();
    a_ = operand(info[1], size_t(m_) * k_, "a");
    b_ = operand(info[2], size_t(k_) * n_, "b");
    Keep(info[1]);
    Keep(info[2]);
  }
  void Run() override { out_ = gpu::run_gemm(mode_, m_, n_, k_, a_, b_, trans_b_, repeats_); }
  Napi::Value Result(Napi::Env env) override {
    Napi::Float32Array c = Napi::Float32Array::New(env, out_.c.size());
    std::memcpy(c.Data(), out_.c.data(), out_.c.size() * sizeof(float));
    Napi::Object r = Napi::Object::New(env);
    r.Set("c", c);
    r.Set("seconds", out_.seconds);
    return r;
  }

 private:
  static int dim(const Napi::Object& o, const char* name) {
    const double d = o.Get(name).ToNumber().DoubleValue();
    if (!(d >= 1 && d <= 1 << 24) || d != double(int(d))) fail("E_LAYOUT", std::string("gemm ") + name + " must be an integer from 1 to 2^24");
    return int(d);
  }
  static const float* operand(const Napi::Value& v, size_t count, const char* name) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
        v.As<Napi::Float32Array>().ElementLength() != count)
      fail("E_LAYOUT", std::string("gemm ") + name + " must be a Float32Array of " + std::to_string(count) + " elements");
    return v.As<Napi::Float32Array>().Data();
  }
  std::string mode_;
  int m_ = 0, n_ = 0, k_ = 0, repeats_ = 1;
  bool trans_b_ = false;
  const float* a_ = nullptr;
  const float* b_ = nullptr;
  gpu::GemmRun out_;
};

Napi::Value Gemm(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return start(std::make_unique<GemmWorker>(info.Env(), info)); });
}

}  // namespace

void register_gpu(Napi::Env env, Napi::Object exports) {
  Napi::Object g = Napi::Object::New(env);
  g.Set("encodeDevice", Napi::Function::New(env, EncodeDevice));
  g.Set("decodeToDevice", Napi::Function::New(env, DecodeToDevice));
  g.Set("scanNonFinite", Napi::Function::New(env, ScanNonFiniteDevice));
  g.Set("alloc", Napi::Function::New(env, Alloc));
  g.Set("free", Napi::Function::New(env, Free));
  g.Set("copyToDevice", Napi::Function::New(env, CopyToDevice));
  g.Set("copyToHost", Napi::Function::New(env, CopyToHost));
  g.Set("copyOnDevice", Napi::Function::New(env, CopyOnDevice));
  g.Set("copyFromArena", Napi::Function::New(env, CopyFromArena));
  g.Set("memoryInfo", Napi::Function::New(env, MemoryInfo));
  g.Set("gemm", Napi::Function::New(env, Gemm));
  exports.Set("gpu", g);
}

}  // namespace kvtc

#else

namespace kvtc {
void register_gpu(Napi::Env, Napi::Object) {}  // no exports.gpu without CUDA
}  // namespace kvtc

#endif
