#include "js_util.h"

#include <algorithm>
#include <cstring>

namespace kvtc {

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

void PromiseWorker::Execute() {
  try {
    Run();
    return;
  } catch (const KvtcException& e) {
    code_ = e.code;
    message_ = e.what();
  } catch (const std::bad_alloc&) {
    code_ = "E_CAPACITY";
    message_ = "out of memory";
  } catch (const std::exception& e) {
    code_ = "E_INTERNAL";
    message_ = e.what();
  }
  failed_ = true;
}

void PromiseWorker::RunInline() {
  std::unique_ptr<PromiseWorker> self(this);
  Execute();
  Complete(env_);
}

namespace {
thread_local bool g_inline = false;

// setInlineExecution(on): see register_threading in js_util.h.
Napi::Value SetInlineExecution(const Napi::CallbackInfo& info) {
  g_inline = info[0].ToBoolean();
  return info.Env().Undefined();
}
}  // namespace

bool inline_execution() { return g_inline; }

void register_threading(Napi::Env env, Napi::Object exports) {
  exports.Set("setInlineExecution", Napi::Function::New(env, SetInlineExecution));
}

void PromiseWorker::Complete(Napi::Env env) {
  Napi::HandleScope scope(env);
  if (failed_) return deferred_.Reject(make_error(env, code_, message_).Value());
  try {
    deferred_.Resolve(Result(env));
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  } catch (const KvtcException& e) {
    deferred_.Reject(make_error(env, e.code, e.what()).Value());
  } catch (const std::exception& e) {
    deferred_.Reject(make_error(env, "E_INTERNAL", e.what()).Value());
  }
}

Napi::Object plan_group_object(Napi::Env env, const PlanGroup& g) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("start", g.start);
  o.Set("size", g.size);
  o.Set("bits", uint32_t(g.bits));
  o.Set("quantizer", g.mode == kGroupStatic ? "static" : "minmax");
  if (g.mode == kGroupStatic) {
    o.Set("shift", double(g.shift));
    o.Set("scale", double(g.scale));
    if (!g.levels.empty()) {
      Napi::Float32Array lv = Napi::Float32Array::New(env, g.levels.size());
      std::copy(g.levels.begin(), g.levels.end(), lv.Data());
      o.Set("levels", lv);
    }
  }
  return o;
}

void* view_data(const Napi::Value& v, size_t& bytes) {
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_value buffer;
  size_t offset = 0;
  // Unlike Napi::TypedArray::ArrayBuffer(), this also works for views of a SharedArrayBuffer.
  if (napi_get_typedarray_info(v.Env(), v, &type, &length, &data, &buffer, &offset) != napi_ok)
    fail("E_OPTIONS", "expected a typed array");
  size_t elem = 1;
  switch (type) {
    case napi_int16_array: case napi_uint16_array: elem = 2; break;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
    case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
    default: elem = 1;
  }
  bytes = length * elem;
  return data;
}

DType read_dtype(const Napi::Value& v) {
  const uint32_t d = v.As<Napi::Number>().Uint32Value();
  if (d > 2) fail("E_LAYOUT", "dtype code must be 0 (f32), 1 (f16) or 2 (bf16)");
  return DType(d);
}

CacheView read_cache(const Napi::Object& obj, uint32_t layers, uint32_t row_values,
                     const std::function<void(Napi::Value)>& pin) {
  CacheView c;
  const double tokens = obj.Get("tokens").As<Napi::Number>().DoubleValue();
  if (!(tokens >= 0 && tokens <= 2147483647.0) || tokens != double(uint32_t(tokens)))
    fail("E_LAYOUT", "cache.tokens must be a non-negative integer");
  c.tokens = uint32_t(tokens);
  c.dtype = read_dtype(obj.Get("dtype"));
  const size_t want = size_t(c.tokens) * row_values * dtype_bytes(c.dtype);
  for (int s = 0; s < 2; s++) {
    const char* name = s == 0 ? "keys" : "values";
    Napi::Value v = obj.Get(name);
    if (!v.IsArray()) fail("E_LAYOUT", std::string("cache.") + name + " must be an array");
    Napi::Array arr = v.As<Napi::Array>();
    if (arr.Length() != layers)
      fail("E_LAYOUT", std::string("cache.") + name + " has " + std::to_string(arr.Length()) + " layers, expected " +
                           std::to_string(layers));
    for (uint32_t l = 0; l < layers; l++) {
      Napi::Value e = arr.Get(l);
      if (!e.IsTypedArray()) fail("E_LAYOUT", std::string("cache.") + name + "[" + std::to_string(l) + "] must be a typed array");
      size_t bytes = 0;
      const uint8_t* p = static_cast<const uint8_t*>(view_data(e, bytes));
      if (bytes != want)
        fail("E_LAYOUT", std::string("cache.") + name + "[" + std::to_string(l) + "] has " + std::to_string(bytes) +
                             " bytes, expected " + std::to_string(want));
      (s == 0 ? c.keys : c.values).push_back(p);
      if (pin) pin(e);
    }
  }
  Napi::Value pos = obj.Get("positions");
  if (!pos.IsUndefined() && !pos.IsNull()) {
    if (!pos.IsTypedArray() || pos.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      fail("E_LAYOUT", "cache.positions must be an Int32Array");
    size_t bytes = 0;
    c.positions = static_cast<const int32_t*>(view_data(pos, bytes));
    if (bytes != size_t(c.tokens) * 4) fail("E_LAYOUT", "cache.positions must have one entry per token");
    if (pin) pin(pos);
  }
  return c;
}

ProfilePtr profile_of(const Napi::Value& v) {
  if (!v.IsExternal()) fail("E_INTERNAL", "expected a native profile handle");
  return *v.As<Napi::External<ProfilePtr>>().Data();
}

const uint8_t* bytes_of(const Napi::Value& v, size_t& len, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    fail("E_OPTIONS", std::string(what) + " must be a Uint8Array");
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  len = a.ByteLength();
  return a.Data();
}

void BlobSource::Bind(const Napi::Value& source, const std::function<void(Napi::Value)>& keep) {
  if (source.IsNumber()) {
    block_ = arena_get(uint64_t(source.As<Napi::Number>().Int64Value()));
    data_ = block_->data;
    len_ = block_->size;
  } else {
    size_t len;
    data_ = bytes_of(source, len, "blob");
    len_ = len;
    keep(source);
  }
}

void EncodedBlob::Take(std::vector<uint8_t>&& blob) {
  size_ = blob.size();
  if (to_arena_)
    handle_ = arena_put(std::move(blob));
  else
    blob_ = std::move(blob);
}

Napi::Value EncodedBlob::Result(Napi::Env env) const {
  if (to_arena_) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("handle", double(handle_));
    o.Set("bytes", double(size_));
    return o;
  }
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, blob_.size());
  std::memcpy(ab.Data(), blob_.data(), blob_.size());
  return ab;
}

const char* dtype_name(DType t) { return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : "bf16"; }

}  // namespace kvtc
