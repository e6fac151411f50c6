// One process-wide pool of worker threads, sized to the cores, shared by every call (sync or async).
// parallel_for splits [0, n) into chunks that the workers and the calling thread claim; several calls may be in
// flight at once (each async call runs on its own libuv thread). Which thread runs a chunk never changes the
// result: callers write per-index outputs and reduce them afterwards in a fixed order.
#pragma once

#include <stdint.h>

#include <functional>

namespace papo {

class ThreadPool {
 public:
  static ThreadPool& instance();
  // Threads that work on one call: the workers plus the caller. PAPO_NUM_THREADS overrides the core count.
  int size() const { return workers_ + 1; }
  // fn(begin, end) over chunks of at most `grain` indices; rethrows the first exception a chunk threw.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  explicit ThreadPool(int workers);
  struct Impl;
  Impl* impl_;
  int workers_;
};

}  // namespace papo
