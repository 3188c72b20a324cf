// N-API bindings of codec profiles: parsing a profile's bytes (off the event loop) into the
// handle every codec call takes, and the facts `CodecProfile.info()` reports.
#include "js_profile.h"

#include <cstring>

#include "js_util.h"
#include "profile.h"
#include "quant.h"

namespace kvtc {
namespace {

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
  o.Set("allocation", pr.allocation == Allocation::Global ? "global" : "stream");
  o.Set("weighting", pr.weighting == Weighting::Attention ? "attention" : "mse");
  o.Set("targetTokens", pr.target_tokens);
  o.Set("expectedRatio", pr.expected_ratio);
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
      go.Set("weight", g.weight);
      go.Set("plannedBits", g.planned_bits);
      uint32_t bits = 0;
      Napi::Array plan = Napi::Array::New(env, g.plan.size());
      for (size_t j = 0; j < g.plan.size(); j++) {
        plan.Set(uint32_t(j), plan_group_object(env, g.plan[j]));
        bits += group_cost_bits(g.plan[j].size, g.plan[j].bits, g.plan[j].mode);
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

}  // namespace

void register_profile(Napi::Env env, Napi::Object exports) {
  exports.Set("loadProfile", Napi::Function::New(env, LoadProfile));
  exports.Set("profileInfo", Napi::Function::New(env, ProfileInfo));
}

}  // namespace kvtc
