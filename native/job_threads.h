// The addon's own threads for the work a JavaScript thread hands off (promise workers started
// on the main thread, or on any thread that did not ask for inline execution).
//
// Why not libuv's pool, where Napi::AsyncWorker runs: its four threads are the process's, shared
// with fs, dns, zlib and crypto, which copies of whole caches would hold up; and they run at the
// process's priority, so on a busy machine a multi-millisecond copy could keep the event loop off
// its core for a whole time slice. These threads run niced by kJobThreadNice (Linux, where the
// nice value is per thread; elsewhere at normal priority), below the event loop.
#pragma once
#include <napi.h>

namespace kvtc {

// Added to the nice value of each job thread (and of the threads a job starts, which inherit it).
// 5 is a third of the event loop's weight: the kernel favours the loop, while the jobs still take
// every cycle it leaves (the store's restores run at +5 too, its background encodes at +10).
constexpr int kJobThreadNice = 5;

// Threads in the pool; they start with the first job.
constexpr int kJobThreads = 4;

// One unit of work: Execute() on a job thread, then Complete(env) on the JavaScript thread that
// queued it, which deletes it. Execute() must not throw (a promise worker catches for it).
class Job {
 public:
  virtual ~Job() = default;
  virtual void Execute() = 0;
  virtual void Complete(Napi::Env env) = 0;
};

// Takes ownership of job. While jobs are pending, the JavaScript thread's event loop stays alive.
// If that thread's environment is torn down first (a worker thread exits), the teardown waits for
// its running jobs, and its queued and finished ones are leaked rather than run or completed:
// their JavaScript references belong to the environment that is gone.
void queue_job(Napi::Env env, Job* job);

}  // namespace kvtc
