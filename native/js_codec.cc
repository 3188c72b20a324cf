// N-API bindings of the codec: encode, decode, inspect and the non-finite scan of caches.
// Everything longer than a header parse runs in an AsyncWorker and settles a promise.
#include "js_codec.h"

#include <cmath>
#include <cstring>
#include <thread>

#ifdef KVTC_WITH_CUDA
#include "../cuda/gpu.h"
#endif
#include "codec.h"
#include "container.h"
#include "host_arena.h"
#include "js_util.h"
#include "out_pages.h"
#include "profile.h"

namespace kvtc {
namespace {

// The GPU variants of encode and decode exist only in a CUDA build.
void require_gpu_build(bool gpu) {
#ifndef KVTC_WITH_CUDA
  if (gpu) fail("E_BACKEND", "this build of kvtc has no CUDA support");
#endif
}

Napi::Object header_info(Napi::Env env, const BlobHeader& h) {
  Napi::Object o = Napi::Object::New(env);
  Napi::Uint8Array fp = Napi::Uint8Array::New(env, 16);
  std::memcpy(fp.Data(), h.fingerprint.data(), 16);
  o.Set("fingerprint", fp);
  o.Set("layers", h.layers);
  o.Set("kvHeads", h.kv_heads);
  o.Set("headDim", h.head_dim);
  o.Set("dtype", dtype_name(h.dtype));
  o.Set("tokens", h.tokens);
  // The field names of the public BlobInfo (src/codec/codec.ts), which extends this object.
  o.Set("sinkTokens", h.sinks);
  o.Set("windowTokens", h.window);
  o.Set("escapedTokens", uint32_t(h.escapes.size()));
  o.Set("contiguousPositions", h.contiguous);
  o.Set("positionStart", h.pos_start);
  o.Set("bytes", double(h.total_len));
  Napi::Array secs = Napi::Array::New(env, h.sections.size());
  for (size_t i = 0; i < h.sections.size(); i++) {
    Napi::Object so = Napi::Object::New(env);
    so.Set("mode", entropy_coded(h.sections[i].mode) ? "rans" : "stored");
    so.Set("storedBytes", h.sections[i].stored_len);
    so.Set("rawBytes", h.sections[i].raw_len);
    secs.Set(uint32_t(i), so);
  }
  o.Set("sections", secs);
  return o;
}

// ---- encode / decode -----------------------------------------------------------------------

// The optional `threads` argument of encode/decodeInto: absent means 1.
int threads_arg(const Napi::Value& v) {
  if (v.IsUndefined()) return 1;
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0;
  if (!(d >= 1 && d <= kMaxThreads) || d != double(int(d)))
    fail("E_OPTIONS", "options.threads must be an integer from 1 to " + std::to_string(kMaxThreads));
  return int(d);
}

class EncodeWorker : public PromiseWorker {
 public:
  EncodeWorker(Napi::Env env, ProfilePtr pr, const Napi::Object& cache, const EncodeOptions& opts, bool to_arena,
               bool gpu)
      : PromiseWorker(env), profile_(std::move(pr)), opts_(opts), gpu_(gpu), out_(to_arena) {
    view_ = read_cache(cache, profile_->layers, profile_->row_values(), [this](Napi::Value v) { Keep(v); });
    require_gpu_build(gpu);
  }
  void Run() override {
#ifdef KVTC_WITH_CUDA
    out_.Take(gpu_ ? gpu::encode_host(*profile_, view_, opts_) : encode_cache(*profile_, view_, opts_));
#else
    out_.Take(encode_cache(*profile_, view_, opts_));
#endif
  }
  Napi::Value Result(Napi::Env env) override { return out_.Result(env); }

 private:
  ProfilePtr profile_;
  CacheView view_;
  EncodeOptions opts_;
  bool gpu_;
  EncodedBlob out_;
};

// A boolean field of encode's options object; absent means `fallback`.
bool flag(const Napi::Object& o, const char* name, bool fallback) {
  const Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return fallback;
  if (!v.IsBoolean()) fail("E_OPTIONS", std::string("options.") + name + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// A token count of encode's options (sinks, window); absent means -1 (the profile's).
int64_t token_count(const Napi::Object& o, const char* name) {
  const Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return -1;
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0 && d <= 4294967295.0) || d != double(int64_t(d)))
    fail("E_OPTIONS", std::string("options.") + name + " must be a token count (an integer >= 0)");
  return int64_t(d);
}

// encode(profile, cache, { entropy = true, toArena = false, gpu = false, threads = 1, sinks?, window? })
Napi::Value Encode(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (!info[2].IsObject()) fail("E_OPTIONS", "encode options must be an object");
    const Napi::Object o = info[2].As<Napi::Object>();
    EncodeOptions opts;
    opts.entropy = flag(o, "entropy", true);
    opts.threads = threads_arg(o.Get("threads"));
    opts.sinks = token_count(o, "sinks");
    opts.window = token_count(o, "window");
    return start(std::make_unique<EncodeWorker>(info.Env(), profile_of(info[0]), info[1].As<Napi::Object>(), opts,
                                                flag(o, "toArena", false), flag(o, "gpu", false)));
  });
}

// Decoding is two steps so that output memory is allocated by JavaScript (where a failed
// allocation is a catchable RangeError, not a V8 fatal error) and only for validated sizes:
// decodePrepare verifies the checksum and the header against the profile and returns the sizes;
// decodeInto decodes into the caller's buffers (verifying again: the blob may have changed).
class DecodePrepareWorker : public PromiseWorker {
 public:
  DecodePrepareWorker(Napi::Env env, ProfilePtr pr, const Napi::Value& source) : PromiseWorker(env), profile_(std::move(pr)) {
    src_.Bind(source, [this](Napi::Value v) { Keep(v); });
  }
  void Run() override {
    header_ = src_.Header();
    bytes_ = check_blob(*profile_, header_);
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("tokens", header_.tokens);
    o.Set("dtype", dtype_name(header_.dtype));
    o.Set("bytesPerStream", double(bytes_));
    return o;
  }

 private:
  ProfilePtr profile_;
  BlobSource src_;
  BlobHeader header_;
  size_t bytes_ = 0;
};

Napi::Value DecodePrepare(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return start(std::make_unique<DecodePrepareWorker>(info.Env(), profile_of(info[0]), info[1]));
  });
}

OutputSlice slice_arg(const Napi::Value& offset, const Napi::Value& tokens) {
  OutputSlice s;
  if (offset.IsUndefined()) return s;
  if (!offset.IsNumber() || !tokens.IsNumber()) fail("E_INTERNAL", "decodeInto offset and tokens must be numbers");
  const double o = offset.As<Napi::Number>().DoubleValue(), t = tokens.As<Napi::Number>().DoubleValue();
  if (!(o >= 0 && t >= 1 && o < t && t <= 4294967295.0) || o != double(uint32_t(o)) || t != double(uint32_t(t)))
    fail("E_INTERNAL", "decodeInto offset/tokens out of range");
  s.offset = uint32_t(o);
  s.tokens = uint32_t(t);
  return s;
}

// One stream's output: a typed array holding every layer ([layers][tokens][rv], contiguous), or an
// array of one typed array per layer (a caller's own cache, whose layers need not be one buffer).
struct StreamOutput {
  bool per_layer = false;
  std::vector<uint8_t*> data;  // one pointer (contiguous) or one per layer
  std::vector<size_t> bytes;
};

class DecodeIntoWorker : public PromiseWorker {
 public:
  DecodeIntoWorker(Napi::Env env, ProfilePtr pr, const Napi::Value& source, const Napi::Value& keys,
                   const Napi::Value& values, const Napi::Value& positions, bool gpu, int threads, OutputSlice out)
      : PromiseWorker(env), profile_(std::move(pr)), gpu_(gpu), threads_(threads), out_(out) {
    require_gpu_build(gpu);
    src_.Bind(source, [this](Napi::Value v) { Keep(v); });
    if (!positions.IsTypedArray() || positions.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      fail("E_INTERNAL", "decodeInto needs an Int32Array of positions");
    // Views may be of a SharedArrayBuffer (the store's device tier shares caches with workers).
    keys_ = stream_output(keys);
    values_ = stream_output(values);
    size_t pbytes = 0;
    pp_ = static_cast<int32_t*>(view_data(positions, pbytes));
    plen_ = pbytes / 4;
    Keep(positions);
  }
  void Run() override {
    BlobHeader h = src_.Header(false);
    const size_t bytes = check_blob(*profile_, h);
    const uint32_t layers = profile_->layers;
    if (keys_.per_layer != values_.per_layer) fail("E_INTERNAL", "decodeInto keys and values must have the same form");
    // Bytes per stream the output must hold: the blob's (a whole output) or its slice's.
    size_t want = bytes;
    if (out_.tokens == 0) {
      require_corrupt(plen_ == h.tokens, "blob changed during decoding");
    } else {
      // A slice of a larger output: the blob must fit exactly where the caller placed it.
      const size_t per_token = h.tokens > 0 ? bytes / h.tokens : 0;
      require_corrupt(uint64_t(out_.offset) + h.tokens <= out_.tokens, "chunk does not fit its place in the output");
      want = per_token * out_.tokens;
      if (plen_ != out_.tokens) fail("E_INTERNAL", "decodeInto output buffers do not match the output slice");
    }
    for (const StreamOutput* o : {&keys_, &values_}) {
      if (o->per_layer) {
        if (o->data.size() != layers) fail("E_INTERNAL", "decodeInto needs one array per layer");
        for (size_t b : o->bytes)
          if (b * layers != want) fail("E_INTERNAL", "decodeInto layer arrays do not match the blob");
      } else if (o->bytes[0] != want) {
        // A whole output sized by decodePrepare: a mismatch means the blob changed in between.
        if (out_.tokens == 0) require_corrupt(false, "blob changed during decoding");
        fail("E_INTERNAL", "decodeInto output buffers do not match the output slice");
      }
      // The whole views, also where this blob fills one slice of them: the advice changes no data.
      for (size_t i = 0; i < o->data.size(); i++) prepare_output_pages(o->data[i], o->bytes[i]);
    }
#ifdef KVTC_WITH_CUDA
    if (gpu_) {
      if (out_.tokens != 0 || keys_.per_layer) fail("E_BACKEND", "a GPU decode writes whole, contiguous outputs only");
      return gpu::decode_to_host(*profile_, src_.data(), h, keys_.data[0], values_.data[0], pp_);
    }
#endif
    if (keys_.per_layer)
      decode_blob_layers(*profile_, src_.data(), h, keys_.data, values_.data, pp_, threads_, out_);
    else
      decode_blob(*profile_, src_.data(), h, keys_.data[0], values_.data[0], pp_, threads_, out_);
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  StreamOutput stream_output(const Napi::Value& v) {
    StreamOutput o;
    auto add = [&](const Napi::Value& a) {
      if (!a.IsTypedArray()) fail("E_INTERNAL", "decodeInto outputs must be typed arrays");
      size_t n = 0;
      o.data.push_back(static_cast<uint8_t*>(view_data(a, n)));
      o.bytes.push_back(n);
      Keep(a);
    };
    if (v.IsArray()) {
      const Napi::Array arr = v.As<Napi::Array>();
      o.per_layer = true;
      for (uint32_t i = 0; i < arr.Length(); i++) add(arr.Get(i));
    } else {
      add(v);
    }
    return o;
  }

  ProfilePtr profile_;
  BlobSource src_;
  StreamOutput keys_, values_;
  int32_t* pp_;
  size_t plen_;
  bool gpu_;
  int threads_;
  OutputSlice out_;
};

// decodeInto(profile, source, keys, values, positions, gpu, threads[, offset, tokens]): keys and
// values are each one typed array for every layer, or an array of one typed array per layer;
// offset and tokens place the blob's tokens at rows [offset, offset + n) of an output of `tokens` tokens.
Napi::Value DecodeInto(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return start(std::make_unique<DecodeIntoWorker>(info.Env(), profile_of(info[0]), info[1], info[2], info[3], info[4],
                                                    info[5].ToBoolean(), threads_arg(info[6]), slice_arg(info[7], info[8])));
  });
}

Napi::Value InspectBlob(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t len;
    const uint8_t* p = bytes_of(info[0], len, "blob");
    return header_info(info.Env(), read_blob_header(p, len, info[1].ToBoolean()));
  });
}

// ---- input checks --------------------------------------------------------------------------

// scanNonFinite(cache, layers, rowValues): the first NaN/Inf as {stream, layer, token}, or null.
class ScanWorker : public PromiseWorker {
 public:
  ScanWorker(Napi::Env env, const Napi::Object& cache, uint32_t layers, uint32_t rv) : PromiseWorker(env), rv_(rv) {
    view_ = read_cache(cache, layers, rv, [this](Napi::Value v) { Keep(v); });
  }
  void Run() override {
    std::vector<float> row(rv_);
    const size_t rb = size_t(rv_) * dtype_bytes(view_.dtype);
    for (int s = 0; s < 2 && !found_; s++) {
      const auto& layers = s == 0 ? view_.keys : view_.values;
      for (uint32_t l = 0; l < layers.size() && !found_; l++)
        for (uint32_t t = 0; t < view_.tokens && !found_; t++) {
          load_row(static_cast<const uint8_t*>(layers[l]) + size_t(t) * rb, view_.dtype, int(rv_), row.data());
          for (float v : row)
            if (!std::isfinite(v)) {
              found_ = true;
              stream_ = s;
              layer_ = l;
              token_ = t;
              break;
            }
        }
    }
  }
  Napi::Value Result(Napi::Env env) override {
    if (!found_) return env.Null();
    Napi::Object o = Napi::Object::New(env);
    o.Set("stream", stream_ == 0 ? "keys" : "values");
    o.Set("layer", layer_);
    o.Set("token", token_);
    return o;
  }

 private:
  uint32_t rv_;
  CacheView view_;
  bool found_ = false;
  int stream_ = 0;
  uint32_t layer_ = 0, token_ = 0;
};

Napi::Value ScanNonFinite(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return start(std::make_unique<ScanWorker>(info.Env(), info[0].As<Napi::Object>(), info[1].As<Napi::Number>().Uint32Value(),
                                              info[2].As<Napi::Number>().Uint32Value()));
  });
}

}  // namespace

void register_codec(Napi::Env env, Napi::Object exports) {
  exports.Set("encode", Napi::Function::New(env, Encode));
  exports.Set("decodePrepare", Napi::Function::New(env, DecodePrepare));
  exports.Set("decodeInto", Napi::Function::New(env, DecodeInto));
  exports.Set("inspectBlob", Napi::Function::New(env, InspectBlob));
  exports.Set("scanNonFinite", Napi::Function::New(env, ScanNonFinite));
}

}  // namespace kvtc
