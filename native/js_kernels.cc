// The codec's leaf kernels (rANS span coders, quantize/dequantize, dtype conversion) exposed to
// tests and bench/kernels.bench.ts as native.internals.kernels, with the SIMD path chosen per
// call so every path the CPU has can be held to the scalar one. Synchronous; the timed forms
// repeat a kernel `reps` times and return the fastest repetition in seconds of thread CPU time
// (tests ignore it).
#include <algorithm>
#include <ctime>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu_dispatch.h"
#include "errors.h"
#include "gemm_int8.h"
#include "js_kernels.h"
#include "js_util.h"
#include "quant.h"
#include "rans.h"
#include "rans_reference.h"

namespace kvtc {
namespace {

SimdPath path_of(const Napi::Value& v) {
  SimdPath p;
  const std::string name = v.As<Napi::String>().Utf8Value();
  if (!simd_parse(name.c_str(), p)) fail("E_LAYOUT", "unknown SIMD path: " + name);
  if (!simd_has(p)) fail("E_BACKEND", "this CPU cannot run the " + name + " path");
  return p;
}

template <class T>
T* typed_of(const Napi::Value& v, size_t& count, const char* what) {
  size_t bytes = 0;
  void* p = view_data(v, bytes);
  if (bytes % sizeof(T)) fail("E_LAYOUT", std::string(what) + ": byte length is not a whole number of elements");
  count = bytes / sizeof(T);
  return static_cast<T*>(p);
}

int reps_of(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined()) return 1;
  const int r = info[i].As<Napi::Number>().Int32Value();
  if (r < 1 || r > 100000) fail("E_LAYOUT", "reps must be 1..100000");
  return r;
}

// CPU time of the calling thread: on a machine shared with other work, wall time would count
// the time slices given to others.
double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

template <class Fn>
double best_seconds(int reps, Fn&& fn) {
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    const double t0 = thread_seconds();
    fn();
    best = std::min(best, thread_seconds() - t0);
  }
  return best;
}

// Tables from numContexts x 256 frequencies: the codec's and the reference coder's.
struct Tables {
  std::vector<RansTable> fast;
  std::vector<RansRefTable> ref;
};
std::unique_ptr<Tables> tables_of(const Napi::Value& v, const uint16_t* context, size_t period) {
  size_t n;
  const uint16_t* f = typed_of<uint16_t>(v, n, "freqs");
  if (n == 0 || n % 256) fail("E_LAYOUT", "freqs must hold 256 entries per context");
  auto t = std::make_unique<Tables>();
  t->fast.resize(n / 256);
  t->ref.resize(n / 256);
  for (size_t c = 0; c < n / 256; c++) {
    rans_build_table(f + 256 * c, t->fast[c]);
    rans_ref_build(f + 256 * c, t->ref[c]);
  }
  for (size_t i = 0; i < period; i++)
    if (context[i] >= n / 256) fail("E_LAYOUT", "context id beyond the tables");
  return t;
}

// "fast": what the CPU codec runs (for decoding rans_decode_span_cpu); "span": the shared
// host/device span coder (the GPU kernels' code); "reference": the original coder.
enum class Impl { Fast, Span, Reference };
Impl impl_of(const Napi::Value& v) {
  const std::string impl = v.As<Napi::String>().Utf8Value();
  if (impl == "fast") return Impl::Fast;
  if (impl == "span") return Impl::Span;
  if (impl == "reference") return Impl::Reference;
  fail("E_LAYOUT", "impl must be 'fast', 'span' or 'reference'");
}

// ransEncode(freqs, context, data, impl, reps?) -> { bytes, seconds }: one stream, byte i of
// data coded with the table of context[i % context.length].
Napi::Value RansEncode(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t period, n;
    const uint16_t* ctx = typed_of<uint16_t>(info[1], period, "context");
    if (period == 0) fail("E_LAYOUT", "context must not be empty");
    const uint8_t* data = typed_of<uint8_t>(info[2], n, "data");
    const bool ref = impl_of(info[3]) == Impl::Reference;  // the CPU encodes with the span coder
    auto t = tables_of(info[0], ctx, period);
    std::vector<uint8_t> buf(rans_span_bound(n));
    size_t at = 0;
    const double s = best_seconds(reps_of(info, 4), [&] {
      at = ref ? rans_ref_encode_span(data, n, ctx, period, t->ref.data(), buf.data(), buf.size())
               : rans_encode_span(data, n, ctx, period, t->fast.data(), buf.data(), buf.size());
    });
    if (at > buf.size()) fail("E_INTERNAL", "entropy coder exceeded its worst-case bound");
    Napi::Object o = Napi::Object::New(info.Env());
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), buf.size() - at);
    std::memcpy(out.Data(), buf.data() + at, buf.size() - at);
    o.Set("bytes", out);
    o.Set("seconds", s);
    return o;
  });
}

// ransDecode(freqs, context, coded, out, impl, reps?) -> { status, seconds }: decodes exactly
// out.length bytes; status is the span decoder's RansStatus (0 = ok).
Napi::Value RansDecode(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t period, len, n;
    const uint16_t* ctx = typed_of<uint16_t>(info[1], period, "context");
    if (period == 0) fail("E_LAYOUT", "context must not be empty");
    const uint8_t* in = typed_of<uint8_t>(info[2], len, "coded");
    uint8_t* out = typed_of<uint8_t>(info[3], n, "out");
    const Impl impl = impl_of(info[4]);
    auto t = tables_of(info[0], ctx, period);
    std::vector<const RansTable*> tabs(period + kRansLanes - 1);
    for (size_t j = 0; j < tabs.size(); j++) tabs[j] = &t->fast[ctx[j % period]];
    int status = 0;
    const double s = best_seconds(reps_of(info, 5), [&] {
      if (impl == Impl::Reference) status = rans_ref_decode_span(in, len, out, n, ctx, period, t->ref.data());
      else if (impl == Impl::Span) status = rans_decode_span(in, len, out, n, ctx, period, t->fast.data());
      else status = rans_decode_span_cpu(in, len, out, n, tabs.data(), period);
    });
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("status", status);
    o.Set("seconds", s);
    return o;
  });
}

// groups: Uint32Array of [start, size, bits] triples, as a plan.
RowLayout layout_of(const Napi::Value& v) {
  size_t n;
  const uint32_t* g = typed_of<uint32_t>(v, n, "groups");
  if (n == 0 || n % 3) fail("E_LAYOUT", "groups must be [start, size, bits] triples");
  std::vector<PlanGroup> groups;
  for (size_t i = 0; i < n; i += 3) {
    if (g[i + 1] == 0 || g[i + 2] == 0 || g[i + 2] > 8) fail("E_LAYOUT", "group size must be > 0 and bits 1..8");
    groups.push_back({g[i], g[i + 1], uint8_t(g[i + 2])});
  }
  return make_row_layout(groups);
}

// quantize(groups, D, n, ld, rows, path, reps?) -> seconds.
Napi::Value Quantize(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const RowLayout l = layout_of(info[0]);
    size_t nd, nr;
    const float* D = typed_of<float>(info[1], nd, "D");
    const size_t n = info[2].As<Napi::Number>().Uint32Value(), ld = info[3].As<Napi::Number>().Uint32Value();
    uint8_t* rows = typed_of<uint8_t>(info[4], nr, "rows");
    if (ld < l.k || (n > 0 && (n - 1) * ld + l.k > nd) || nr < n * l.rowBytes) fail("E_LAYOUT", "quantize: shapes");
    const SimdPath p = path_of(info[5]);
    return Napi::Number::New(info.Env(), best_seconds(reps_of(info, 6), [&] { quantize_rows_path(p, l, D, n, ld, rows); }));
  });
}

// dequantize(groups, rows, n, D, ld, path, reps?) -> seconds.
Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const RowLayout l = layout_of(info[0]);
    size_t nd, nr;
    const uint8_t* rows = typed_of<uint8_t>(info[1], nr, "rows");
    const size_t n = info[2].As<Napi::Number>().Uint32Value();
    float* D = typed_of<float>(info[3], nd, "D");
    const size_t ld = info[4].As<Napi::Number>().Uint32Value();
    if (ld < l.k || (n > 0 && (n - 1) * ld + l.k > nd) || nr < n * l.rowBytes) fail("E_LAYOUT", "dequantize: shapes");
    const SimdPath p = path_of(info[5]);
    return Napi::Number::New(info.Env(),
                             best_seconds(reps_of(info, 6), [&] { dequantize_rows_path(p, l, rows, n, D, ld); }));
  });
}

// int8Decode(groups, basis, p, rows, n, mean, X, reps?, statics?) -> seconds: the int8
// reconstruction (gemm_int8.h) of n quantized rows against the k x p basis (k = the plan's end),
// X = mean + rows x basis, in the codec's 64-row batches. statics: [{ group, shift, scale,
// levels? }] makes those plan groups static (codes only in the row; value shift + code·scale, or
// levels[(i << bits) + code] for component i). E_OPTIONS without VNNI.
Napi::Value Int8Decode(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    RowLayout l = layout_of(info[0]);
    if (info.Length() > 8 && info[8].IsArray()) {
      std::vector<PlanGroup> groups = l.groups;
      const Napi::Array st = info[8].As<Napi::Array>();
      for (uint32_t i = 0; i < st.Length(); i++) {
        const Napi::Object o = st.Get(i).As<Napi::Object>();
        const uint32_t g = o.Get("group").As<Napi::Number>().Uint32Value();
        if (g >= groups.size()) fail("E_LAYOUT", "int8Decode: statics[].group");
        PlanGroup& pg = groups[g];
        pg.mode = kGroupStatic;
        pg.shift = o.Get("shift").As<Napi::Number>().FloatValue();
        pg.scale = o.Get("scale").As<Napi::Number>().FloatValue();
        if (o.Has("levels")) {
          size_t nl;
          const float* lv = typed_of<float>(o.Get("levels"), nl, "levels");
          if (pg.bits > kMaxLevelBits || nl != (size_t(pg.size) << pg.bits)) fail("E_LAYOUT", "int8Decode: statics[].levels");
          pg.levels.assign(lv, lv + nl);
        }
      }
      l = make_row_layout(groups);
    }
    size_t nb, nr, nm, nx;
    const float* B = typed_of<float>(info[1], nb, "basis");
    const int p = info[2].As<Napi::Number>().Int32Value();
    const uint8_t* rows = typed_of<uint8_t>(info[3], nr, "rows");
    const size_t n = info[4].As<Napi::Number>().Uint32Value();
    const float* mean = typed_of<float>(info[5], nm, "mean");
    float* X = typed_of<float>(info[6], nx, "X");
    if (p < 1 || nb != size_t(l.k) * p || nm != size_t(p) || nr < n * l.rowBytes || nx < n * size_t(p))
      fail("E_LAYOUT", "int8Decode: shapes");
    const Int8Basis b = make_int8_basis(l, B, int(l.k), p);
    std::vector<uint8_t> scratch;
    return Napi::Number::New(info.Env(), best_seconds(reps_of(info, 7), [&] {
      for (size_t i = 0; i < n; i += 64) {
        const int m = int(std::min<size_t>(64, n - i));
        decode_rows_int8(l, b, mean, rows + i * l.rowBytes, m, X + i * size_t(p), p, scratch);
      }
    }));
  });
}

// int8Peak(iterations) -> { ops, seconds }: the register-only vpdpbusd loop (thread CPU time).
Napi::Value Int8Peak(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const int64_t it = info[0].As<Napi::Number>().Int64Value();
    double ops = 0;
    const double s = best_seconds(1, [&] { ops = int8_peak_loop(it); });
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("ops", ops);
    o.Set("seconds", s);
    return o;
  });
}

// groupSqError(d, size, bits, path) -> number.
Napi::Value GroupSqError(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t nd;
    const float* d = typed_of<float>(info[0], nd, "d");
    const uint32_t size = info[1].As<Napi::Number>().Uint32Value(), bits = info[2].As<Napi::Number>().Uint32Value();
    if (size == 0 || size > nd || bits == 0 || bits > 8) fail("E_LAYOUT", "groupSqError: shapes");
    return Napi::Number::New(info.Env(), group_sq_error_path(path_of(info[3]), d, size, bits));
  });
}

// loadRow(src, dtype, out, path, reps?) -> seconds: converts out.length elements.
Napi::Value LoadRow(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t sb, n;
    const void* src = view_data(info[0], sb);
    const DType t = read_dtype(info[1]);
    float* out = typed_of<float>(info[2], n, "out");
    if (sb < n * dtype_bytes(t) || n > 0x7fffffff) fail("E_LAYOUT", "loadRow: shapes");
    const SimdPath p = path_of(info[3]);
    return Napi::Number::New(info.Env(), best_seconds(reps_of(info, 4), [&] { load_row_path(p, src, t, int(n), out); }));
  });
}

// storeRow(src, dtype, out, path, reps?) -> seconds: converts src.length floats.
Napi::Value StoreRow(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t n, db;
    const float* in = typed_of<float>(info[0], n, "src");
    const DType t = read_dtype(info[1]);
    void* dst = view_data(info[2], db);
    if (db < n * dtype_bytes(t) || n > 0x7fffffff) fail("E_LAYOUT", "storeRow: shapes");
    const SimdPath p = path_of(info[3]);
    return Napi::Number::New(info.Env(), best_seconds(reps_of(info, 4), [&] { store_row_path(p, in, t, int(n), dst); }));
  });
}

// memcpy(src, dst, reps?) -> seconds: the copy ceiling beside the kernels.
Napi::Value Memcpy(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    size_t sb, db;
    const void* src = view_data(info[0], sb);
    void* dst = view_data(info[1], db);
    if (db < sb) fail("E_LAYOUT", "memcpy: destination too small");
    return Napi::Number::New(info.Env(), best_seconds(reps_of(info, 2), [&] { std::memcpy(dst, src, sb); }));
  });
}

// profileTables(profile, stream, group) -> { freqs, context, groups }: a stream group's entropy
// tables, row contexts and plan ([start, size, bits] triples), as the hooks above take them.
Napi::Value ProfileTables(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    ProfilePtr pr = profile_of(info[0]);
    const uint32_t s = info[1].As<Napi::Number>().Uint32Value(), gi = info[2].As<Napi::Number>().Uint32Value();
    if (s > 1 || gi >= pr->groups[s].size()) fail("E_LAYOUT", "no such stream group");
    const StreamGroup& g = pr->groups[s][gi];
    Napi::Env env = info.Env();
    Napi::Uint16Array f = Napi::Uint16Array::New(env, g.freqs.size());
    std::memcpy(f.Data(), g.freqs.data(), g.freqs.size() * 2);
    Napi::Uint16Array c = Napi::Uint16Array::New(env, g.row.context.size());
    std::memcpy(c.Data(), g.row.context.data(), g.row.context.size() * 2);
    Napi::Uint32Array p = Napi::Uint32Array::New(env, 3 * g.plan.size());
    for (size_t i = 0; i < g.plan.size(); i++) {
      p[3 * i] = g.plan[i].start;
      p[3 * i + 1] = g.plan[i].size;
      p[3 * i + 2] = g.plan[i].bits;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("freqs", f);
    o.Set("context", c);
    o.Set("groups", p);
    return o;
  });
}

// simd() -> { best, paths }: the path the codec uses and every path this CPU can run.
Napi::Value Simd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("best", simd_name(simd_best()));
  Napi::Array a = Napi::Array::New(env);
  uint32_t i = 0;
  for (SimdPath p : {SimdPath::Scalar, SimdPath::Avx2, SimdPath::Avx512})
    if (simd_has(p)) a.Set(i++, simd_name(p));
  o.Set("paths", a);
  return o;
}

}  // namespace

void register_kernel_internals(Napi::Env env, Napi::Object internals) {
  Napi::Object k = Napi::Object::New(env);
  k.Set("simd", Napi::Function::New(env, Simd));
  k.Set("ransEncode", Napi::Function::New(env, RansEncode));
  k.Set("ransDecode", Napi::Function::New(env, RansDecode));
  k.Set("quantize", Napi::Function::New(env, Quantize));
  k.Set("dequantize", Napi::Function::New(env, Dequantize));
  k.Set("groupSqError", Napi::Function::New(env, GroupSqError));
  k.Set("loadRow", Napi::Function::New(env, LoadRow));
  k.Set("storeRow", Napi::Function::New(env, StoreRow));
  k.Set("memcpy", Napi::Function::New(env, Memcpy));
  k.Set("int8Decode", Napi::Function::New(env, Int8Decode));
  k.Set("int8Peak", Napi::Function::New(env, Int8Peak));
  k.Set("profileTables", Napi::Function::New(env, ProfileTables));
  internals.Set("kernels", k);
}

}  // namespace kvtc
