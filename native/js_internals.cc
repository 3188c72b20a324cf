// Test and benchmark entry points (`native.internals`): the eigensolver, RoPE, the rANS coder of
// one stream group, the GEMM kernels (js_gemm) and the leaf kernels (js_kernels). Not part of
// the API: src/internal and the tests are their only callers.
#include "js_internals.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "bitplan.h"
#include "eigen.h"
#include "js_gemm.h"
#include "js_kernels.h"
#include "js_util.h"
#include "profile.h"
#include "rans.h"
#include "rope.h"
#include "rope_simd.h"

namespace kvtc {
namespace {

const StreamGroup& group_of(const Profile& pr, const Napi::CallbackInfo& info) {
  const uint32_t s = info[1].As<Napi::Number>().Uint32Value();
  const uint32_t g = info[2].As<Napi::Number>().Uint32Value();
  if (s > 1 || g >= pr.groups[s].size()) fail("E_LAYOUT", "no such stream group");
  return pr.groups[s][g];
}

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

// rope(x, kvHeads, headDim, style, freqs, positions, inverse, path?): rotates token rows of x in
// place; with a path, by the decoder's rotation on that SIMD path (rope_simd.h).
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
    bool simd = false;
    SimdPath path = SimdPath::Scalar;
    if (info.Length() > 7 && !info[7].IsUndefined()) {
      const std::string name = info[7].As<Napi::String>().Utf8Value();
      if (!simd_parse(name.c_str(), path) || !simd_has(path)) fail("E_BACKEND", "rope: no such SIMD path here: " + name);
      simd = true;
    }
    if (heads <= 0 || dim <= 0 || rp.dims > dim || x.ElementLength() != pos.ElementLength() * size_t(heads) * dim)
      fail("E_LAYOUT", "rope: inconsistent shapes");
    std::vector<float> cs(std::max(2, rp.dims));
    for (size_t t = 0; t < pos.ElementLength(); t++) {
      rope_angles(rp, pos[t], cs.data(), cs.data() + rp.dims / 2);
      float* row = x.Data() + t * heads * dim;
      if (simd)
        rope_rotate_row_path(path, rp, row, heads, dim, cs.data(), cs.data() + rp.dims / 2, inverse);
      else
        rope_rotate_row(rp, row, heads, dim, cs.data(), cs.data() + rp.dims / 2, inverse);
    }
    return info.Env().Undefined();
  });
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

std::vector<int> int_array(const Napi::Value& v) {
  std::vector<int> out;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(a.Get(i).As<Napi::Number>().Int32Value());
  return out;
}

Napi::Object plan_object(Napi::Env env, const PlanResult& r) {
  Napi::Object o = Napi::Object::New(env);
  Napi::Array groups = Napi::Array::New(env, r.groups.size());
  for (size_t j = 0; j < r.groups.size(); j++) groups.Set(uint32_t(j), plan_group_object(env, r.groups[j]));
  o.Set("groups", groups);
  o.Set("error", r.error);
  o.Set("bitsPerToken", r.bits_per_token);
  o.Set("costBits", r.cost_bits);
  return o;
}

// The request of one stream group: proj (n x kmax Float32Array), widths, sizes, entropy costs.
PlanRequest plan_request(const Napi::Value& proj, int n, int kmax, const Napi::Value& widths, const Napi::Value& sizes,
                         bool entropy) {
  Napi::Float32Array p = proj.As<Napi::Float32Array>();
  if (n <= 0 || kmax <= 0 || p.ElementLength() != size_t(n) * kmax) fail("E_LAYOUT", "plan: proj must be n*kmax floats");
  PlanRequest req;
  req.proj = p.Data();
  req.n = n;
  req.kmax = kmax;
  req.ld = kmax;
  req.widths = int_array(widths);
  req.sizes = int_array(sizes);
  req.cost = entropy ? PlanCost::Entropy : PlanCost::Packed;
  return req;
}

// planBits(proj, n, kmax, budgetBits, widths, sizes, entropy, statics?): the per-stream plan
// (statics: also offer static groups, as the whole-cache plan does).
Napi::Value PlanBits(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    PlanRequest req = plan_request(info[0], info[1].As<Napi::Number>().Int32Value(), info[2].As<Napi::Number>().Int32Value(),
                                   info[4], info[5], info[6].ToBoolean());
    req.budget_bits = info[3].As<Napi::Number>().DoubleValue();
    req.static_groups = info.Length() > 7 && info[7].ToBoolean();
    return plan_object(info.Env(), plan_bits(req));
  });
}

// planSplit(projs[], n, kmaxs[], weights[], totalBits, unitBits, capBits[], widths, sizes, entropy, statics?):
// the whole-cache allocation over several stream groups, as calibration runs it (statics: also
// offer static groups, as calibration does with entropy costs).
Napi::Value PlanSplit(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Array projs = info[0].As<Napi::Array>();
    const int n = info[1].As<Napi::Number>().Int32Value();
    const std::vector<int> kmaxs = int_array(info[2]);
    Napi::Array wa = info[3].As<Napi::Array>();
    const double total_bits = info[4].As<Napi::Number>().DoubleValue();
    const double unit = info[5].As<Napi::Number>().DoubleValue();
    Napi::Array caps = info[6].As<Napi::Array>();
    const size_t S = projs.Length();
    if (kmaxs.size() != S || wa.Length() != S || caps.Length() != S || !(unit > 0))
      fail("E_LAYOUT", "planSplit: one kmax, weight and cap per stream group, unit > 0");
    std::vector<PlanTable> tables(S);
    std::vector<std::vector<double>> curves(S);
    std::vector<double> weights(S);
    for (size_t s = 0; s < S; s++) {
      PlanRequest req = plan_request(projs.Get(uint32_t(s)), n, kmaxs[s], info[7], info[8], info[9].ToBoolean());
      req.static_groups = info.Length() > 10 && info[10].ToBoolean();
      tables[s] = plan_table(req);
      weights[s] = wa.Get(uint32_t(s)).As<Napi::Number>().DoubleValue();
      const double cap = caps.Get(uint32_t(s)).As<Napi::Number>().DoubleValue();
      plan_from_table(tables[s], unit, int(std::floor(cap / unit)), &curves[s]);
    }
    const BudgetSplit split = allocate_units(curves, weights, int(std::floor(total_bits / unit)));
    Napi::Object o = Napi::Object::New(info.Env());
    Napi::Array units = Napi::Array::New(info.Env(), S), plans = Napi::Array::New(info.Env(), S);
    for (size_t s = 0; s < S; s++) {
      units.Set(uint32_t(s), split.units[s]);
      plans.Set(uint32_t(s), plan_object(info.Env(), plan_from_table(tables[s], unit, split.units[s], nullptr)));
    }
    o.Set("units", units);
    o.Set("plans", plans);
    o.Set("objective", split.objective);
    return o;
  });
}

// staticLevels(proj, n, size, bits, shift, scale): the reconstruction levels calibration fits to a
// static group of n x size projections (fit_static_levels), size << bits floats.
Napi::Value StaticLevels(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Float32Array p = info[0].As<Napi::Float32Array>();
    const int n = info[1].As<Napi::Number>().Int32Value();
    PlanGroup g;
    g.size = info[2].As<Napi::Number>().Uint32Value();
    g.bits = uint8_t(info[3].As<Napi::Number>().Uint32Value());
    g.mode = kGroupStatic;
    g.shift = info[4].As<Napi::Number>().FloatValue();
    g.scale = info[5].As<Napi::Number>().FloatValue();
    if (n <= 0 || g.size == 0 || g.bits == 0 || g.bits > kMaxLevelBits || p.ElementLength() != size_t(n) * g.size)
      fail("E_LAYOUT", "staticLevels: proj must be n*size floats, bits 1..4");
    fit_static_levels(p.Data(), g.size, n, g);
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), g.levels.size());
    std::copy(g.levels.begin(), g.levels.end(), out.Data());
    return out;
  });
}

}  // namespace

void register_internals(Napi::Env env, Napi::Object internals) {
  register_gemm_internals(env, internals);
  internals.Set("symEig", Napi::Function::New(env, SymEig));
  internals.Set("symEigPath", Napi::Function::New(env, SymEigPath));
  internals.Set("rope", Napi::Function::New(env, Rope));
  internals.Set("ransEncode", Napi::Function::New(env, RansEncode));
  internals.Set("ransDecode", Napi::Function::New(env, RansDecode));
  internals.Set("planBits", Napi::Function::New(env, PlanBits));
  internals.Set("planSplit", Napi::Function::New(env, PlanSplit));
  internals.Set("staticLevels", Napi::Function::New(env, StaticLevels));
  register_kernel_internals(env, internals);
}

}  // namespace kvtc
