// N-API bindings of the codec: profiles, encode, decode, inspect and calibration. Everything
// longer than a header parse runs in an AsyncWorker and settles a promise.
#include "js_codec.h"
#include "js_kernels.h"

#include <cmath>
#include <cstring>
#include <thread>

#include "calibrate.h"
#ifdef KVTC_WITH_CUDA
#include "../cuda/gpu.h"
#endif
#include "codec.h"
#include "container.h"
#include "crc32c.h"
#include "eigen.h"
#include "host_arena.h"
#include "js_gemm.h"
#include "js_util.h"
#include "profile.h"
#include "rans.h"
#include "rope.h"

namespace kvtc {
namespace {

const char* dtype_name(DType t) { return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : "bf16"; }

// The GPU variants of encode and decode exist only in a CUDA build.
void require_gpu_build(bool gpu) {
#ifndef KVTC_WITH_CUDA
  if (gpu) fail("E_BACKEND", "this build of kvtc has no CUDA support");
#endif
}

Napi::Float32Array float_array(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * 4);
  return a;
}

Napi::Object profile_info(Napi::Env env, const Profile& pr) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("layers", pr.layers);
  o.Set("kvHeads", pr.kv_heads);
  o.Set("headDim", pr.head_dim);
  o.Set("dtype", dtype_name(pr.dtype));
  o.Set("ropeStyle", uint32_t(pr.rope.style));
  o.Set("ropeDims", pr.rope.dims);
  o.Set("ropeTheta", pr.rope_theta);
  o.Set("ropeFreqs", float_array(env, pr.rope.freqs));
  o.Set("sinks", pr.sinks);
  o.Set("window", pr.window);
  o.Set("groupLayers", pr.group_layers);
  o.Set("ratio", pr.ratio);
  o.Set("seed", double(pr.seed));
  o.Set("calibrationTokens", double(pr.calib_tokens));
  Napi::Array groups = Napi::Array::New(env);
  uint32_t gi = 0;
  for (int s = 0; s < 2; s++)
    for (const StreamGroup& g : pr.groups[s]) {
      Napi::Object go = Napi::Object::New(env);
      go.Set("stream", s == 0 ? "keys" : "values");
      go.Set("layerStart", g.layer_start);
      go.Set("layerCount", g.layer_count);
      go.Set("features", g.p);
      go.Set("components", g.k);
      go.Set("totalEnergy", g.total_energy);
      go.Set("meanSquare", g.mean_square);
      go.Set("predictedError", g.predicted_err);
      uint32_t bits = 0;
      Napi::Array plan = Napi::Array::New(env, g.plan.size());
      for (size_t j = 0; j < g.plan.size(); j++) {
        Napi::Object pg = Napi::Object::New(env);
        pg.Set("start", g.plan[j].start);
        pg.Set("size", g.plan[j].size);
        pg.Set("bits", uint32_t(g.plan[j].bits));
        plan.Set(uint32_t(j), pg);
        bits += group_cost_bits(g.plan[j].size, g.plan[j].bits);
      }
      go.Set("plan", plan);
      go.Set("bitsPerToken", bits);
      go.Set("rowBytes", g.row.rowBytes);
      go.Set("eigenvalues", float_array(env, g.eigen));
      groups.Set(gi++, go);
    }
  o.Set("groups", groups);
  return o;
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
  o.Set("sinks", h.sinks);
  o.Set("window", h.window);
  o.Set("escapes", uint32_t(h.escapes.size()));
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

// ---- profiles ------------------------------------------------------------------------------

class LoadProfileWorker : public PromiseWorker {
 public:
  LoadProfileWorker(Napi::Env env, Napi::Uint8Array bytes, Napi::Uint8Array fp) : PromiseWorker(env) {
    data_.assign(bytes.Data(), bytes.Data() + bytes.ByteLength());
    if (fp.ByteLength() != 16) fail("E_INTERNAL", "fingerprint must be 16 bytes");
    std::memcpy(fp_.data(), fp.Data(), 16);
  }
  void Run() override {
    profile_ = parse_profile(data_.data(), data_.size());
    profile_->fingerprint = fp_;
    data_.clear();
  }
  Napi::Value Result(Napi::Env env) override {
    return Napi::External<ProfilePtr>::New(env, new ProfilePtr(profile_),
                                           [](Napi::Env, ProfilePtr* p) { delete p; });
  }

 private:
  std::vector<uint8_t> data_;
  std::array<uint8_t, 16> fp_{};
  std::shared_ptr<Profile> profile_;
};

Napi::Value LoadProfile(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return start(std::make_unique<LoadProfileWorker>(info.Env(), info[0].As<Napi::Uint8Array>(), info[1].As<Napi::Uint8Array>()));
  });
}

// Synchronous: parses and validates a profile, returns its metadata (used by fromBytes()).
Napi::Value ProfileInfo(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t len;
    const uint8_t* p = bytes_of(info[0], len, "profile bytes");
    std::shared_ptr<Profile> pr = parse_profile(p, len);
    return profile_info(info.Env(), *pr);
  });
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
  EncodeWorker(Napi::Env env, ProfilePtr pr, const Napi::Object& cache, bool entropy, bool to_arena, bool gpu,
               int threads)
      : PromiseWorker(env), profile_(std::move(pr)), gpu_(gpu), out_(to_arena) {
    view_ = read_cache(cache, profile_->layers, profile_->row_values(), [this](Napi::Value v) { Keep(v); });
    opts_.entropy = entropy;
    opts_.threads = threads;
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

Napi::Value Encode(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return start(std::make_unique<EncodeWorker>(info.Env(), profile_of(info[0]), info[1].As<Napi::Object>(),
                                                info[2].ToBoolean(), info[3].ToBoolean(), info[4].ToBoolean(),
                                                threads_arg(info[5])));
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

class DecodeIntoWorker : public PromiseWorker {
 public:
  DecodeIntoWorker(Napi::Env env, ProfilePtr pr, const Napi::Value& source, const Napi::Value& keys,
                   const Napi::Value& values, const Napi::Value& positions, bool gpu, int threads)
      : PromiseWorker(env), profile_(std::move(pr)), gpu_(gpu), threads_(threads) {
    require_gpu_build(gpu);
    src_.Bind(source, [this](Napi::Value v) { Keep(v); });
    if (!keys.IsTypedArray() || !values.IsTypedArray() || !positions.IsTypedArray() ||
        positions.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      fail("E_INTERNAL", "decodeInto needs two typed arrays and an Int32Array");
    // Views may be of a SharedArrayBuffer (the store's device tier shares caches with workers).
    kp_ = view_data(keys, klen_);
    vp_ = view_data(values, vlen_);
    size_t pbytes = 0;
    pp_ = static_cast<int32_t*>(view_data(positions, pbytes));
    plen_ = pbytes / 4;
    Keep(keys);
    Keep(values);
    Keep(positions);
  }
  void Run() override {
    BlobHeader h = src_.Header(false);
    const size_t bytes = check_blob(*profile_, h);
    require_corrupt(klen_ == bytes && vlen_ == bytes && plen_ == h.tokens, "blob changed during decoding");
#ifdef KVTC_WITH_CUDA
    if (gpu_) return gpu::decode_to_host(*profile_, src_.data(), h, kp_, vp_, pp_);
#endif
    decode_blob(*profile_, src_.data(), h, kp_, vp_, pp_, threads_);
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  ProfilePtr profile_;
  BlobSource src_;
  void *kp_, *vp_;
  int32_t* pp_;
  size_t klen_, vlen_, plen_;
  bool gpu_;
  int threads_;
};

Napi::Value DecodeInto(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return start(std::make_unique<DecodeIntoWorker>(info.Env(), profile_of(info[0]), info[1], info[2], info[3], info[4],
                                                    info[5].ToBoolean(), threads_arg(info[6])));
  });
}

Napi::Value InspectBlob(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t len;
    const uint8_t* p = bytes_of(info[0], len, "blob");
    return header_info(info.Env(), read_blob_header(p, len, info[1].ToBoolean()));
  });
}

// ---- calibration ---------------------------------------------------------------------------

using CalibratorPtr = std::shared_ptr<Calibrator>;

Profile read_layout(const Napi::Object& o) {
  Profile p;
  p.layers = o.Get("layers").As<Napi::Number>().Uint32Value();
  p.kv_heads = o.Get("kvHeads").As<Napi::Number>().Uint32Value();
  p.head_dim = o.Get("headDim").As<Napi::Number>().Uint32Value();
  p.dtype = read_dtype(o.Get("dtype"));
  const uint32_t style = o.Get("ropeStyle").As<Napi::Number>().Uint32Value();
  if (style > 2) fail("E_LAYOUT", "rope style must be 0, 1 or 2");
  p.rope.style = RopeStyle(style);
  if (p.rope.style != RopeStyle::None) {
    p.rope.dims = int(o.Get("ropeDims").As<Napi::Number>().Int32Value());
    p.rope_theta = o.Get("ropeTheta").As<Napi::Number>().DoubleValue();
    Napi::Float32Array f = o.Get("ropeFreqs").As<Napi::Float32Array>();
    p.rope.freqs.assign(f.Data(), f.Data() + f.ElementLength());
    if (p.rope.dims <= 0 || p.rope.dims % 2 || uint32_t(p.rope.dims) > p.head_dim ||
        p.rope.freqs.size() != size_t(p.rope.dims / 2))
      fail("E_LAYOUT", "rope spec is inconsistent");
  }
  if (p.layers == 0 || p.kv_heads == 0 || p.head_dim == 0) fail("E_LAYOUT", "layout dimensions must be positive");
  return p;
}

std::vector<int> int_list(const Napi::Value& v) {
  std::vector<int> out;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(a.Get(i).As<Napi::Number>().Int32Value());
  return out;
}

Napi::Value CalibratorCreate(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Profile layout = read_layout(info[0].As<Napi::Object>());
    Napi::Object o = info[1].As<Napi::Object>();
    CalibrateSettings s;
    s.sinks = o.Get("sinks").As<Napi::Number>().Uint32Value();
    s.window = o.Get("window").As<Napi::Number>().Uint32Value();
    s.group_layers = o.Get("groupLayers").As<Napi::Number>().Uint32Value();
    s.ratio = o.Get("ratio").As<Napi::Number>().DoubleValue();
    s.seed = uint64_t(o.Get("seed").As<Napi::Number>().Int64Value());
    s.sample_tokens = o.Get("sampleTokens").As<Napi::Number>().Uint32Value();
    s.max_tokens = uint64_t(o.Get("maxTokens").As<Napi::Number>().Int64Value());
    s.max_features = o.Get("maxFeatures").As<Napi::Number>().Uint32Value();
    s.sizes = int_list(o.Get("groupSizes"));
    s.widths = int_list(o.Get("widths"));
    if (o.Has("threads") && o.Get("threads").IsNumber()) s.threads = std::max(1u, o.Get("threads").As<Napi::Number>().Uint32Value());
    auto* c = new CalibratorPtr(std::make_shared<Calibrator>(layout, s));
    return Napi::External<CalibratorPtr>::New(info.Env(), c, [](Napi::Env, CalibratorPtr* p) { delete p; });
  });
}

CalibratorPtr calibrator_of(const Napi::Value& v) {
  if (!v.IsExternal()) fail("E_INTERNAL", "expected a native calibrator handle");
  return *v.As<Napi::External<CalibratorPtr>>().Data();
}

class CalibrateAddWorker : public PromiseWorker {
 public:
  CalibrateAddWorker(Napi::Env env, CalibratorPtr c, const Napi::Object& cache, uint32_t layers, uint32_t rv)
      : PromiseWorker(env), cal_(std::move(c)) {
    view_ = read_cache(cache, layers, rv, [this](Napi::Value v) { Keep(v); });
  }
  void Run() override { cal_->add(view_); }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, double(cal_->tokens_seen())); }

 private:
  CalibratorPtr cal_;
  CacheView view_;
};

Napi::Value CalibratorAdd(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    CalibratorPtr c = calibrator_of(info[0]);
    return start(std::make_unique<CalibrateAddWorker>(info.Env(), c, info[1].As<Napi::Object>(), info[2].As<Napi::Number>().Uint32Value(),
                                     info[3].As<Napi::Number>().Uint32Value()));
  });
}

struct FitProgress {
  double fraction;
  std::string stage;
};

class CalibrateFinishWorker : public Napi::AsyncProgressQueueWorker<FitProgress> {
 public:
  CalibrateFinishWorker(Napi::Env env, CalibratorPtr c, Napi::Function progress, int threads)
      : Napi::AsyncProgressQueueWorker<FitProgress>(env), cal_(std::move(c)), threads_(threads),
        deferred_(Napi::Promise::Deferred::New(env)) {
    if (!progress.IsEmpty() && progress.IsFunction()) progress_ = Napi::Persistent(progress);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute(const ExecutionProgress& ep) override {
    try {
      out_ = cal_->finish([&](double f, const std::string& s) { ep.Send(new FitProgress{f, s}, 1); }, threads_);
    } catch (const KvtcException& e) {
      code_ = e.code;
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "E_CAPACITY";
      SetError("out of memory during calibration");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnProgress(const FitProgress* data, size_t count) override {
    if (progress_.IsEmpty()) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    for (size_t i = 0; i < count; i++) {
      try {
        progress_.Call({Napi::Number::New(env, data[i].fraction), Napi::String::New(env, data[i].stage)});
      } catch (...) {
        // A throwing progress callback must not break calibration.
      }
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, out_.size());
    std::memcpy(ab.Data(), out_.data(), out_.size());
    deferred_.Resolve(ab);
  }
  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    deferred_.Reject(make_error(env, code_, e.Message()).Value());
  }

 private:
  CalibratorPtr cal_;
  int threads_;
  Napi::Promise::Deferred deferred_;
  Napi::FunctionReference progress_;
  std::vector<uint8_t> out_;
  std::string code_ = "E_INTERNAL";
};

Napi::Value CalibratorFinish(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    CalibratorPtr c = calibrator_of(info[0]);
    Napi::Function fn = info[1].IsFunction() ? info[1].As<Napi::Function>() : Napi::Function();
    int threads = info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : 0;
    if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
    return start(std::make_unique<CalibrateFinishWorker>(info.Env(), c, fn, threads));
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

// ---- internals exposed for tests -----------------------------------------------------------

Napi::Value SymEig(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Float64Array a = info[0].As<Napi::Float64Array>();
    const int n = info[1].As<Napi::Number>().Int32Value();
    if (n <= 0 || a.ElementLength() != size_t(n) * n) fail("E_LAYOUT", "symEig: matrix must be n*n");
    std::vector<double> m(a.Data(), a.Data() + a.ElementLength()), vals, vecs;
    // Optional third argument: "reference" (the old tred2/tql2 solver) or a vector path to force.
    const std::string path = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
    if (path.empty()) {
      sym_eig_desc(n, m, vals, vecs);
    } else if (path == "reference") {
      sym_eig_desc_reference(n, m, vals, vecs);
    } else {
      if (!sym_eig_path_supported(path.c_str())) fail("E_OPTIONS", "symEig: path '" + path + "' is not available on this CPU");
      sym_eig_desc(n, m, vals, vecs, path.c_str());
    }
    Napi::Object o = Napi::Object::New(info.Env());
    Napi::Float64Array va = Napi::Float64Array::New(info.Env(), n);
    Napi::Float64Array ve = Napi::Float64Array::New(info.Env(), size_t(n) * n);
    std::memcpy(va.Data(), vals.data(), n * 8);
    std::memcpy(ve.Data(), vecs.data(), size_t(n) * n * 8);
    o.Set("values", va);
    o.Set("vectors", ve);
    return o;
  });
}

Napi::Value SymEigPath(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), sym_eig_path()); }

Napi::Value CalibratorStageSecondsJs(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const CalibrateStageSeconds t = calibrator_of(info[0])->stage_seconds();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("add", t.add);
    o.Set("fit", t.fit);
    o.Set("gram", t.gram);
    o.Set("eigen", t.eigen);
    o.Set("plan", t.plan);
    o.Set("tables", t.tables);
    return o;
  });
}

// rope(x, kvHeads, headDim, style, freqs, positions, inverse): rotates token rows of x in place.
Napi::Value Rope(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Float32Array x = info[0].As<Napi::Float32Array>();
    const int heads = info[1].As<Napi::Number>().Int32Value();
    const int dim = info[2].As<Napi::Number>().Int32Value();
    RopeParams rp;
    rp.style = RopeStyle(info[3].As<Napi::Number>().Uint32Value());
    Napi::Float32Array f = info[4].As<Napi::Float32Array>();
    rp.freqs.assign(f.Data(), f.Data() + f.ElementLength());
    rp.dims = int(rp.freqs.size() * 2);
    Napi::Int32Array pos = info[5].As<Napi::Int32Array>();
    const bool inverse = info[6].ToBoolean();
    if (heads <= 0 || dim <= 0 || rp.dims > dim || x.ElementLength() != pos.ElementLength() * size_t(heads) * dim)
      fail("E_LAYOUT", "rope: inconsistent shapes");
    std::vector<float> cs(std::max(2, rp.dims));
    for (size_t t = 0; t < pos.ElementLength(); t++) {
      rope_angles(rp, pos[t], cs.data(), cs.data() + rp.dims / 2);
      rope_rotate_row(rp, x.Data() + t * heads * dim, heads, dim, cs.data(), cs.data() + rp.dims / 2, inverse);
    }
    return info.Env().Undefined();
  });
}

const StreamGroup& group_of(const Profile& pr, const Napi::CallbackInfo& info) {
  const uint32_t s = info[1].As<Napi::Number>().Uint32Value();
  const uint32_t g = info[2].As<Napi::Number>().Uint32Value();
  if (s > 1 || g >= pr.groups[s].size()) fail("E_LAYOUT", "no such stream group");
  return pr.groups[s][g];
}

// ransEncode(profile, stream, group, rows): entropy-codes packed rows of that stream group with
// its tables, synchronously (benchmarks compare coders on the same bytes with it).
Napi::Value RansEncode(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    ProfilePtr pr = profile_of(info[0]);
    const StreamGroup& g = group_of(*pr, info);
    size_t len;
    const uint8_t* rows = bytes_of(info[3], len, "rows");
    if (g.row.rowBytes == 0 || len % g.row.rowBytes) fail("E_LAYOUT", "rows must be whole quantized rows");
    std::vector<uint8_t> enc = rans_encode(rows, len, g.row.context.data(), g.row.rowBytes, g.tables.data());
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), enc.size());
    std::memcpy(out.Data(), enc.data(), enc.size());
    return out;
  });
}

// ransDecode(profile, stream, group, coded, rawLength): the inverse of ransEncode.
Napi::Value RansDecode(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    ProfilePtr pr = profile_of(info[0]);
    const StreamGroup& g = group_of(*pr, info);
    size_t len;
    const uint8_t* in = bytes_of(info[3], len, "coded");
    const size_t n = size_t(info[4].As<Napi::Number>().Int64Value());
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), n);
    rans_decode(in, len, out.Data(), n, g.row.context.data(), g.row.rowBytes, g.tables.data());
    return out;
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

void register_codec(Napi::Env env, Napi::Object exports) {
  exports.Set("loadProfile", Napi::Function::New(env, LoadProfile));
  exports.Set("profileInfo", Napi::Function::New(env, ProfileInfo));
  exports.Set("encode", Napi::Function::New(env, Encode));
  exports.Set("decodePrepare", Napi::Function::New(env, DecodePrepare));
  exports.Set("decodeInto", Napi::Function::New(env, DecodeInto));
  exports.Set("inspectBlob", Napi::Function::New(env, InspectBlob));
  exports.Set("calibratorCreate", Napi::Function::New(env, CalibratorCreate));
  exports.Set("calibratorAdd", Napi::Function::New(env, CalibratorAdd));
  exports.Set("calibratorFinish", Napi::Function::New(env, CalibratorFinish));
  exports.Set("scanNonFinite", Napi::Function::New(env, ScanNonFinite));
  exports.Set("copyBytes", Napi::Function::New(env, CopyBytes));
  exports.Set("arenaPut", Napi::Function::New(env, ArenaPut));
  exports.Set("arenaRead", Napi::Function::New(env, ArenaRead));
  exports.Set("arenaFree", Napi::Function::New(env, ArenaFree));
  exports.Set("arenaStats", Napi::Function::New(env, ArenaStatsJs));
  exports.Set("crc32c", Napi::Function::New(env, Crc32c));  // record checksums (disk tier, raw format)
  Napi::Object internals = Napi::Object::New(env);
  register_gemm_internals(env, internals);
  internals.Set("symEig", Napi::Function::New(env, SymEig));
  internals.Set("symEigPath", Napi::Function::New(env, SymEigPath));
  internals.Set("calibratorStageSeconds", Napi::Function::New(env, CalibratorStageSecondsJs));
  internals.Set("crc32c", Napi::Function::New(env, Crc32c));
  internals.Set("rope", Napi::Function::New(env, Rope));
  internals.Set("ransEncode", Napi::Function::New(env, RansEncode));
  internals.Set("ransDecode", Napi::Function::New(env, RansDecode));
  register_kernel_internals(env, internals);
  exports.Set("internals", internals);
}

}  // namespace kvtc
