// N-API bindings of calibration: a calibrator fed sample caches (off the event loop) and fitted
// into profile bytes with progress reports.
#include "js_calibrate.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "calibrate.h"
#include "js_util.h"
#include "profile.h"

namespace kvtc {
namespace {

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
    s.allocation = o.Get("allocation").As<Napi::Number>().Uint32Value() == 1 ? Allocation::Global : Allocation::Stream;
    s.weighting = o.Get("weighting").As<Napi::Number>().Uint32Value() == 1 ? Weighting::Attention : Weighting::Mse;
    s.target_tokens = o.Get("targetTokens").As<Napi::Number>().Uint32Value();
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

}  // namespace

void register_calibrate(Napi::Env env, Napi::Object exports, Napi::Object internals) {
  exports.Set("calibratorCreate", Napi::Function::New(env, CalibratorCreate));
  exports.Set("calibratorAdd", Napi::Function::New(env, CalibratorAdd));
  exports.Set("calibratorFinish", Napi::Function::New(env, CalibratorFinish));
  internals.Set("calibratorStageSeconds", Napi::Function::New(env, CalibratorStageSecondsJs));
}

}  // namespace kvtc
