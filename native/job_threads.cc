#include "job_threads.h"

#include "errors.h"

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#endif

namespace kvtc {
namespace {

// Per JavaScript thread: the thread-safe function that brings finished jobs back to it.
class Returns;
void complete_on_js_thread(Napi::Env env, Napi::Function, Returns* returns, Job* job);
using ReturnPath = Napi::TypedThreadSafeFunction<Returns, Job, complete_on_js_thread>;

// What a job thread needs to run a job for an environment and hand it back. An environment's
// teardown frees its ArrayBuffers, references or not, and then destroys the thread-safe function:
// so Close(), from its cleanup hook, stops jobs from starting and waits for the running ones (as
// Node waits for libuv work), and job threads call the function only under the lock while open.
struct ReturnLine {
  std::mutex m;
  std::condition_variable idle;
  bool open = true;
  int running = 0;
  ReturnPath path;

  // On a job thread, before Execute(). False: the environment is gone; the job is leaked.
  bool Begin() {
    std::lock_guard<std::mutex> lock(m);
    if (open) running++;
    return open;
  }
  // On a job thread, after Execute(): hands the job back (or leaks it, the environment gone).
  void End(Job* job) {
    std::lock_guard<std::mutex> lock(m);
    if (open) path.NonBlockingCall(job);  // unlimited queue: never waits
    if (--running == 0) idle.notify_all();
  }
  // On the JavaScript thread, at teardown.
  void Close() {
    std::unique_lock<std::mutex> lock(m);
    open = false;
    idle.wait(lock, [this] { return running == 0; });
  }
};

class Returns {
 public:
  // This JavaScript thread's returns, created with its first job.
  static Returns& of(Napi::Env env) {
    if (current_ == nullptr) {
      Returns* r = current_ = new Returns();
      // Unlimited queue; the one thread count is never released, so the function lives until the
      // environment is torn down.
      r->line_->path = ReturnPath::New(env, "kvtc-job", 0, 1, r, [](Napi::Env, void*, Returns* gone) {
        gone->line_->Close();  // done already by the cleanup hook, which runs first
        if (current_ == gone) current_ = nullptr;
        delete gone;
      });
      r->line_->path.Unref(env);  // an idle store must not keep the process alive
      // Registered after the function's own hook, so it runs before it (hooks run in reverse).
      auto* hold = new std::shared_ptr<ReturnLine>(r->line_);
      napi_add_env_cleanup_hook(env, [](void* arg) {
        auto* line = static_cast<std::shared_ptr<ReturnLine>*>(arg);
        (*line)->Close();
        delete line;
      }, hold);
    }
    return *current_;
  }

  std::shared_ptr<ReturnLine> Line() const { return line_; }
  // On the JavaScript thread: one more job out (the loop stays alive while any is).
  void Submitted(Napi::Env env) {
    if (pending_++ == 0) line_->path.Ref(env);
  }
  void Completed(Napi::Env env) {
    if (--pending_ == 0) line_->path.Unref(env);
  }

 private:
  static thread_local Returns* current_;
  std::shared_ptr<ReturnLine> line_ = std::make_shared<ReturnLine>();
  size_t pending_ = 0;
};
thread_local Returns* Returns::current_ = nullptr;

void complete_on_js_thread(Napi::Env env, Napi::Function, Returns* returns, Job* job) {
  if (env == nullptr) return;  // torn down with this job queued: leaked, see queue_job
  returns->Completed(env);
  job->Complete(env);
  delete job;
}

struct Queued {
  Job* job;
  std::shared_ptr<ReturnLine> line;
};

// Lowers the calling thread's priority (Linux: setpriority on a thread id changes that thread only).
void lower_this_thread() {
#ifdef __linux__
  const id_t tid = id_t(syscall(SYS_gettid));
  errno = 0;
  const int now = getpriority(PRIO_PROCESS, tid);
  if (errno == 0) setpriority(PRIO_PROCESS, tid, now + kJobThreadNice > 19 ? 19 : now + kJobThreadNice);
#endif
}

class Pool {
 public:
  // Throws (E_CAPACITY) only if not one thread could be started.
  void Push(Queued q) {
    {
      std::lock_guard<std::mutex> lock(m_);
      // Detached: the process may exit with a job running (as with libuv's pool).
      for (; threads_ < kJobThreads; threads_++) {
        try {
          std::thread([this] { Serve(); }).detach();
        } catch (const std::system_error&) {
          if (threads_ == 0) fail("E_CAPACITY", "could not start a thread for the addon's work");
          break;  // fewer threads; tried again with the next job
        }
      }
      queue_.push_back(q);
    }
    cv_.notify_one();
  }

 private:
  void Serve() {
    lower_this_thread();
    for (;;) {
      Queued q;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [this] { return !queue_.empty(); });
        q = queue_.front();
        queue_.pop_front();
      }
      if (!q.line->Begin()) continue;  // its environment is gone: leaked (see queue_job)
      q.job->Execute();
      q.line->End(q.job);
    }
  }

  std::mutex m_;
  std::condition_variable cv_;
  std::deque<Queued> queue_;
  int threads_ = 0;
};

// Never destroyed: detached threads may still wait on it while the process exits.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

void queue_job(Napi::Env env, Job* job) {
  Returns& returns = Returns::of(env);
  pool().Push({job, returns.Line()});
  returns.Submitted(env);  // after the push, which may throw; the job cannot finish before we return
}

}  // namespace kvtc
