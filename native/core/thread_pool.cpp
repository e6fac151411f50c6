#include "thread_pool.h"

#include <stdlib.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace papo {

namespace {

struct Job {
  const std::function<void(int64_t, int64_t)>* fn;
  int64_t n, grain, chunks;
  std::atomic<int64_t> next{0};  // next chunk to claim
  int64_t done = 0;              // chunks finished (under the job mutex)
  std::mutex mu;
  std::condition_variable cv;
  std::exception_ptr error;

  // Claims and runs one chunk; false when none is left to claim.
  bool run_one() {
    const int64_t c = next.fetch_add(1);
    if (c >= chunks) return false;
    const int64_t begin = c * grain, end = begin + grain < n ? begin + grain : n;
    std::exception_ptr err;
    try {
      (*fn)(begin, end);
    } catch (...) {
      err = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mu);
    if (err && !error) error = err;
    if (++done == chunks) cv.notify_all();
    return true;
  }
};

int default_threads() {
  if (const char* env = getenv("PAPO_NUM_THREADS")) {
    const int n = atoi(env);
    if (n >= 1 && n <= 1024) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : (int)hw;
}

}  // namespace

struct ThreadPool::Impl {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Job>> queue;  // jobs that may still have chunks to claim
  std::vector<std::thread> threads;

  void worker() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return !queue.empty(); });
        job = queue.front();
        if (job->next.load() >= job->chunks) {  // fully claimed: retire it and look again
          queue.pop_front();
          continue;
        }
      }
      while (job->run_one()) {
      }
    }
  }
};

ThreadPool::ThreadPool(int workers) : impl_(new Impl), workers_(workers) {
  for (int i = 0; i < workers; ++i) {
    impl_->threads.emplace_back([this] { impl_->worker(); });
    impl_->threads.back().detach();  // lives as long as the process; never joined at unload
  }
}

ThreadPool& ThreadPool::instance() {
  // Leaked on purpose: worker threads must not outlive a destroyed pool at process exit.
  static ThreadPool* pool = new ThreadPool(default_threads() - 1);
  return *pool;
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = n;
  job->grain = grain;
  job->chunks = (n + grain - 1) / grain;
  if (job->chunks > 1 && workers_ > 0) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->queue.push_back(job);
    impl_->cv.notify_all();
  }
  while (job->run_one()) {
  }
  std::unique_lock<std::mutex> lock(job->mu);
  job->cv.wait(lock, [&] { return job->done == job->chunks; });
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace papo
