#include "staging_pool.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "cuda_resources.h"
#include "settings.h"

namespace papo {

namespace {

using Clock = std::chrono::steady_clock;

int max_idle(PoolKind kind) { return kind == PoolKind::Staging ? 2 : 8; }

size_t rounded_size(PoolKind kind, size_t bytes) {
  if (kind == PoolKind::Staging) {
    constexpr size_t kGranule = (size_t)2 << 20;
    return (bytes + kGranule - 1) / kGranule * kGranule;
  }
  size_t n = (size_t)64 << 10;
  while (n < bytes) n *= 2;
  return n;
}

struct Idle {
  PoolKind kind;
  int device;
  void* p;
  size_t bytes;
  Clock::time_point since;  // when it was given back
};

std::chrono::milliseconds idle_time_from_env() { return std::chrono::milliseconds(cuda::settings().pinnedIdleMs); }

// Frees one buffer with its own device current (on the reaper thread, any other device would gain a context).
// Never throws: the memory is gone either way, and the callers are destructors and the reaper.
void free_buffer(PoolKind kind, int device, void* p) noexcept {
  try {
    DeviceScope scope(device);
    (void)kind;
    cudaFreeHost(p);
  } catch (...) {
  }
  cudaGetLastError();
}

cudaError_t alloc_buffer(PoolKind, void** p, size_t bytes) { return cudaHostAlloc(p, bytes, cudaHostAllocDefault); }

class Pool {
 public:
  // Never destroyed: the detached reaper thread may still run while static destructors do.
  static Pool& instance() {
    static Pool* pool = new Pool;
    return *pool;
  }

  void* take(PoolKind kind, int device, size_t bytes, size_t* capacity, const char* what) {
    std::vector<Idle> expired;
    void* found = nullptr;
    {
      std::lock_guard<std::mutex> lock(m_);
      expired = take_expired(Clock::now());  // here too, in case the reaper thread could not be started
      auto best = idle_.end();  // the smallest idle buffer that is big enough
      for (auto it = idle_.begin(); it != idle_.end(); ++it)
        if (it->kind == kind && it->device == device && it->bytes >= bytes &&
            (best == idle_.end() || it->bytes < best->bytes))
          best = it;
      if (best != idle_.end()) {
        found = best->p;
        *capacity = best->bytes;
        idle_.erase(best);
      }
    }
    free_all(expired);
    if (found) return found;

    const size_t rounded = rounded_size(kind, bytes);
    void* p = nullptr;
    cudaError_t err = alloc_buffer(kind, &p, rounded);
    if (err == cudaErrorMemoryAllocation) {
      // What the pool keeps idle may be what is missing (pinned memory is host memory whatever its device):
      // free it and try once more, if there was any.
      cudaGetLastError();
      if (release_idle(kind, -1) > 0) err = alloc_buffer(kind, &p, rounded);
    }
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw_out_of_memory("pinned host", rounded, what);
    }
    cuda_check(err, "cudaHostAlloc");
    *capacity = rounded;
    return p;
  }

  void give(PoolKind kind, int device, void* p, size_t bytes) noexcept {
    Idle drop{kind, device, p, bytes, Clock::now()};  // the buffer to free now, if any (p null: none)
    {
      std::lock_guard<std::mutex> lock(m_);
      if (exiting_) return;  // the process is ending: the CUDA runtime may be gone already, leave it to the OS
      bool kept = false;
      if (idleTime_.count() > 0) {
        try {
          idle_.push_back(drop);
          kept = true;
        } catch (...) {  // no memory for the list: free the buffer instead
        }
      }
      if (kept) {
        // There were at most max_idle of this device and kind before, so at most one goes: the least recently
        // returned.
        drop.p = nullptr;
        auto oldest = idle_.end();
        int n = 0;
        for (auto it = idle_.begin(); it != idle_.end(); ++it) {
          if (it->kind != kind || it->device != device) continue;
          ++n;
          if (oldest == idle_.end() || it->since < oldest->since) oldest = it;
        }
        if (n > max_idle(kind)) {
          drop = *oldest;
          idle_.erase(oldest);
        }
        start_reaper();
        cv_.notify_all();  // the reaper's next deadline may have changed
      }
      if (!drop.p) return;
      ++freeing_;
    }
    free_buffer(drop.kind, drop.device, drop.p);
    done_freeing();
  }


 private:
  Pool() : idleTime_(idle_time_from_env()) {}

  // Idle buffers whose time is up, removed from the list (the caller frees them without holding the lock).
  std::vector<Idle> take_expired(Clock::time_point now) {
    std::vector<Idle> out;
    for (auto it = idle_.begin(); it != idle_.end();) {
      if (now - it->since >= idleTime_) {
        out.push_back(*it);
        it = idle_.erase(it);
      } else {
        ++it;
      }
    }
    if (!out.empty()) ++freeing_;
    return out;
  }

  void free_all(const std::vector<Idle>& bufs) noexcept {
    if (bufs.empty()) return;
    for (const Idle& b : bufs) free_buffer(b.kind, b.device, b.p);
    done_freeing();
  }

  void done_freeing() noexcept {
    std::lock_guard<std::mutex> lock(m_);
    --freeing_;
    cv_.notify_all();
  }

  // device -1: every device. Returns how many buffers were freed.
  size_t release_idle(PoolKind kind, int device) {
    std::vector<Idle> out;
    {
      std::lock_guard<std::mutex> lock(m_);
      for (auto it = idle_.begin(); it != idle_.end();) {
        if (it->kind == kind && (device < 0 || it->device == device)) {
          out.push_back(*it);
          it = idle_.erase(it);
        } else {
          ++it;
        }
      }
      if (!out.empty()) ++freeing_;
    }
    free_all(out);
    return out.size();
  }

  // With m_ held. One detached thread for the process, started by the first buffer given back.
  void start_reaper() {
    if (reaperStarted_) return;
    reaperStarted_ = true;
    try {
      std::thread([this] { reap(); }).detach();
      // At exit, before the CUDA runtime tears itself down (its handler was registered earlier, so it runs
      // later): stop the reaper and wait for a free in progress.
      atexit([] { Pool::instance().shut_down(); });
    } catch (...) {
      // No thread: idle buffers are then freed by the next call's take() once their time is up.
    }
  }

  void reap() {
    std::unique_lock<std::mutex> lock(m_);
    while (!exiting_) {
      if (idle_.empty()) {
        cv_.wait(lock);
      } else {
        Clock::time_point due = Clock::time_point::max();
        for (const Idle& b : idle_) due = std::min(due, b.since + idleTime_);
        cv_.wait_until(lock, due);
      }
      if (exiting_) break;
      std::vector<Idle> expired = take_expired(Clock::now());
      if (expired.empty()) continue;
      lock.unlock();
      for (const Idle& b : expired) free_buffer(b.kind, b.device, b.p);
      lock.lock();
      --freeing_;
      cv_.notify_all();
    }
  }

  void shut_down() {
    std::unique_lock<std::mutex> lock(m_);
    exiting_ = true;
    cv_.notify_all();
    cv_.wait(lock, [this] { return freeing_ == 0; });
  }

  std::mutex m_;
  std::condition_variable cv_;
  std::vector<Idle> idle_;
  const std::chrono::milliseconds idleTime_;
  bool reaperStarted_ = false;
  bool exiting_ = false;
  int freeing_ = 0;  // frees in progress outside the lock (shut_down waits for them)
};

}  // namespace


PooledBuffer::PooledBuffer(PoolKind kind, int device, size_t bytes, const char* what) : kind_(kind), device_(device) {
  p_ = Pool::instance().take(kind, device, bytes, &capacity_, what);
}

PooledBuffer::~PooledBuffer() { give_back(); }

PooledBuffer::PooledBuffer(PooledBuffer&& o) noexcept
    : kind_(o.kind_), device_(o.device_), p_(std::exchange(o.p_, nullptr)), capacity_(std::exchange(o.capacity_, 0)) {}

PooledBuffer& PooledBuffer::operator=(PooledBuffer&& o) noexcept {
  if (this != &o) {
    give_back();
    kind_ = o.kind_;
    device_ = o.device_;
    p_ = std::exchange(o.p_, nullptr);
    capacity_ = std::exchange(o.capacity_, 0);
  }
  return *this;
}

void PooledBuffer::give_back() noexcept {
  if (!p_) return;
  Pool::instance().give(kind_, device_, p_, capacity_);
  p_ = nullptr;
  capacity_ = 0;
}

}  // namespace papo
