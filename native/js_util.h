// Helpers for the N-API glue: converting KvtcException into JavaScript errors with a `code`, a
// promise-returning job base, and reading caches / layouts from JavaScript objects.
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "codec.h"
#include "errors.h"
#include "host_arena.h"
#include "job_threads.h"
#include "profile.h"

namespace kvtc {

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message);

// Runs fn, turning C++ exceptions into thrown JavaScript errors with codes.
template <typename Fn>
Napi::Value guarded(Napi::Env env, Fn&& fn) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const KvtcException& e) {
    throw make_error(env, e.code, e.what());
  } catch (const std::bad_alloc&) {
    throw make_error(env, "E_CAPACITY", "out of memory");
  } catch (const std::exception& e) {
    throw make_error(env, "E_INTERNAL", e.what());
  }
}

// A job that settles a promise: Run() on the addon's job threads (job_threads.h), or inline on a
// thread that asked for it; Result() on the JavaScript thread. Exceptions from Run() reject with
// the KvtcError code.
class PromiseWorker : public Job {
 public:
  explicit PromiseWorker(Napi::Env env) : env_(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  // Hands the worker to the job threads; it settles the promise and deletes itself later.
  void Queue() { queue_job(env_, this); }
  // Runs on the calling thread and settles the promise now; deletes the worker (never queued).
  void RunInline();

 protected:
  virtual void Run() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;
  // JavaScript objects (input arrays) that must stay alive while Run() reads them.
  void Keep(Napi::Value v) { refs_.emplace_back(Napi::Persistent(v.As<Napi::Object>())); }

 private:
  void Execute() final;
  void Complete(Napi::Env env) final;
  Napi::Env env_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> refs_;
  std::string code_ = "E_INTERNAL";
  std::string message_;  // set with code_ when Run() failed
  bool failed_ = false;
};

// Whether promise workers started on this thread run inline (see register_threading).
bool inline_execution();

// The store's codec workers turn this on for their own thread: the codec then runs on the worker
// thread itself, whose scheduling priority the store controls (background encodes run niced),
// instead of on libuv's shared pool, where it would compete at normal priority with the main thread.
void register_threading(Napi::Env env, Napi::Object exports);

// Parses the plain object the TypeScript side passes for a cache:
// { tokens, dtype: 0|1|2, keys: TypedArray[], values: TypedArray[], positions?: Int32Array }.
// Validates array byte lengths against the layout; calls pin() on each array it borrows.
CacheView read_cache(const Napi::Object& obj, uint32_t layers, uint32_t row_values,
                     const std::function<void(Napi::Value)>& pin);

DType read_dtype(const Napi::Value& v);

// A plan group as JavaScript sees it: { start, size, bits, quantizer, shift?, scale? }.
Napi::Object plan_group_object(Napi::Env env, const PlanGroup& g);

// "f32", "f16" or "bf16".
const char* dtype_name(DType t);

// Queues a worker built on the JavaScript thread; if its constructor threw, nothing leaks.
template <typename W>
Napi::Promise start(std::unique_ptr<W> w) {
  Napi::Promise p = w->Promise();
  if constexpr (std::is_base_of_v<PromiseWorker, W>) {
    if (inline_execution()) {
      w.release()->RunInline();
      return p;
    }
  }
  w.release()->Queue();
  return p;
}

using ProfilePtr = std::shared_ptr<const Profile>;

// The profile behind a native profile handle (an External made by loadProfile).
ProfilePtr profile_of(const Napi::Value& v);

// Data and length of a Uint8Array; E_LAYOUT for anything else.
const uint8_t* bytes_of(const Napi::Value& v, size_t& len, const char* what);

// A blob to decode: a Uint8Array of the caller, or a number (a host-arena handle, decoded in
// place).
class BlobSource {
 public:
  void Bind(const Napi::Value& source, const std::function<void(Napi::Value)>& keep);
  // verify_again=false skips the checksum for arena blobs, which are immutable once written: the
  // prepare step already verified them. A caller's Uint8Array may have changed, so it is re-checked.
  BlobHeader Header(bool verify_again = true) const { return read_blob_header(data_, len_, verify_again || !block_); }
  const uint8_t* data() const { return data_; }

 private:
  std::shared_ptr<const ArenaBlock> block_;  // keeps an arena blob alive even if freed meanwhile
  const uint8_t* data_ = nullptr;
  size_t len_ = 0;
};

// What an encode resolves to: the blob moved into the host arena ({ handle, bytes }), or copied
// into a new ArrayBuffer. Take() runs on the worker thread, Result() on the main thread.
class EncodedBlob {
 public:
  explicit EncodedBlob(bool to_arena) : to_arena_(to_arena) {}
  void Take(std::vector<uint8_t>&& blob);
  Napi::Value Result(Napi::Env env) const;

 private:
  bool to_arena_;
  std::vector<uint8_t> blob_;
  uint64_t handle_ = 0;
  size_t size_ = 0;
};

// Data pointer and byte length of any typed array, including views of a SharedArrayBuffer.
void* view_data(const Napi::Value& v, size_t& bytes);

}  // namespace kvtc
