#include "js_gemm.h"

#include <string>
#include <vector>

#include "gemm.h"
#include "js_util.h"
#include "cpu_dispatch.h"

namespace kvtc {
namespace {

SimdPath path_arg(const Napi::Value& v) {
  if (!v.IsString()) return gemm_path();
  const std::string s = v.As<Napi::String>().Utf8Value();
  SimdPath p;
  if (!simd_parse(s.c_str(), p)) fail("E_OPTIONS", "path must be avx512, avx2 or scalar, got '" + s + "'");
  if (!simd_has(p)) fail("E_OPTIONS", "this CPU cannot run the " + s + " path");
  return p;
}

int int_arg(const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) fail("E_INTERNAL", std::string(what) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 1 << 30) || d != double(int(d))) fail("E_INTERNAL", std::string(what) + " must be a non-negative integer");
  return int(d);
}

float* floats(const Napi::Value& v, size_t need, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    fail("E_INTERNAL", std::string(what) + " must be a Float32Array");
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (a.ElementLength() < need) fail("E_INTERNAL", std::string(what) + " is too short for the given shape");
  return a.Data();
}

inline size_t extent(int rows, int cols, int ld) { return rows == 0 || cols == 0 ? 0 : size_t(rows - 1) * ld + cols; }

// gemm(path, m, n, k, A, lda, B, ldb, transB, C, ldc, bias | null, accumulate):
// C = A·B (+ bias) (+ C) through pack_b (transB false: B is k x n) or pack_bt (transB true: B
// is n x k and the product uses its transpose) and gemm_packed on `path`.
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const SimdPath path = path_arg(info[0]);
    const int m = int_arg(info[1], "m"), n = int_arg(info[2], "n"), k = int_arg(info[3], "k");
    const int lda = int_arg(info[5], "lda"), ldb = int_arg(info[7], "ldb"), ldc = int_arg(info[10], "ldc");
    const bool trans = info[8].ToBoolean();
    if (lda < k || ldc < n || ldb < (trans ? k : n)) fail("E_INTERNAL", "a leading dimension is below the row length");
    const float* A = floats(info[4], extent(m, k, lda), "A");
    const float* B = floats(info[6], trans ? extent(n, k, ldb) : extent(k, n, ldb), "B");
    float* C = floats(info[9], extent(m, n, ldc), "C");
    const float* bias = info[11].IsTypedArray() ? floats(info[11], size_t(n), "bias") : nullptr;
    const PackedB pb = trans ? pack_bt(k, n, B, ldb) : pack_b(k, n, B, ldb);
    gemm_packed(path, m, A, lda, pb, C, ldc, bias, info[12].ToBoolean());
    return info.Env().Undefined();
  });
}

// gemmRepeat(path, m, n, k, reps): runs an m x n x k product on packed operands reps times
// (for the benchmark; the caller times it). Returns the FLOP count.
Napi::Value GemmRepeat(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const SimdPath path = path_arg(info[0]);
    const int m = int_arg(info[1], "m"), n = int_arg(info[2], "n"), k = int_arg(info[3], "k");
    const int reps = int_arg(info[4], "reps");
    std::vector<float> A(size_t(m) * k), B(size_t(k) * n), C(size_t(m) * n);
    uint32_t s = 12345;
    auto rnd = [&] {
      s = s * 1664525u + 1013904223u;
      return float(int32_t(s >> 8) - (1 << 23)) / float(1 << 23);
    };
    for (float& x : A) x = rnd();
    for (float& x : B) x = rnd();
    const PackedB pb = pack_b(k, n, B.data(), n);
    for (int r = 0; r < reps; r++) gemm_packed(path, m, A.data(), k, pb, C.data(), n, nullptr, false);
    return Napi::Number::New(info.Env(), 2.0 * m * n * k * reps);
  });
}

// fmaPeak(path, iterations): runs the register-only FMA loop; returns its FLOP count.
Napi::Value FmaPeak(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const SimdPath path = path_arg(info[0]);
    return Napi::Number::New(info.Env(), fma_peak_loop(path, int64_t(info[1].As<Napi::Number>().Int64Value())));
  });
}

// simdPaths(): the paths this CPU can run, widest first.
Napi::Value SimdPaths(const Napi::CallbackInfo& info) {
  Napi::Array a = Napi::Array::New(info.Env());
  uint32_t i = 0;
  for (SimdPath p : {SimdPath::Avx512, SimdPath::Avx2, SimdPath::Scalar})
    if (simd_has(p)) a.Set(i++, simd_name(p));
  return a;
}

}  // namespace

void register_gemm_internals(Napi::Env env, Napi::Object internals) {
  internals.Set("gemm", Napi::Function::New(env, Gemm));
  internals.Set("gemmRepeat", Napi::Function::New(env, GemmRepeat));
  internals.Set("fmaPeak", Napi::Function::New(env, FmaPeak));
  internals.Set("simdPaths", Napi::Function::New(env, SimdPaths));
}

}  // namespace kvtc
