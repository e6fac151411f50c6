// The emulated streaming multiprocessor: runs the blocks of a grid, each block's CUDA threads as fibers of one
// OS thread, blocks spread over the calling stream's thread and a pool of helper threads.
//
// A fiber runs until it parks (a barrier, a warp operation) or exits. When every fiber of the block is parked
// the scheduler releases what can be released: a warp operation once every lane of its mask waits at it with
// that mask, a barrier once every thread of the block waits at that barrier. Anything else is a kernel fault
// with a message that names the source line, never a hang. Runnable fibers run in a random order each round
// (seeded, reproducible), so a missing barrier shows up as a wrong result instead of passing by luck.
//
// Memory faults: a SIGSEGV in a fiber (guard pages around device allocations and fiber stacks, or any wild
// address) jumps back to the block's scheduler and fails the launch with cudaErrorIllegalAddress.
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <thread>

#include "fiber.h"
#include "internal.h"

namespace papo_emu {

thread_local DeviceThread* tl_current = nullptr;

namespace {

constexpr size_t kStackBytes = 64 << 10;
constexpr size_t kAltStackBytes = 64 << 10;

enum class State : uint8_t { Runnable, AtBarrier, AtWarp, Exited };

struct CudaThread {
  DeviceThread ids;
  FiberContext ctx;
  State state = State::Runnable;
  int linear = 0, lane = 0, warp = 0;
  // The operation a parked thread waits at.
  int kind = 0, predicate = 0, param = 0, width = 32;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  const char* file = "";
  int line = 0;
};

const char* warp_op_name(int kind) {
  switch (kind) {
    case W_SYNC: return "__syncwarp";
    case W_SHFL: return "__shfl_sync";
    case W_SHFL_XOR: return "__shfl_xor_sync";
    case W_SHFL_UP: return "__shfl_up_sync";
    case W_SHFL_DOWN: return "__shfl_down_sync";
    default: return "__ballot_sync";
  }
}

const char* base_name(const char* path) {
  const char* s = strrchr(path, '/');
  return s ? s + 1 : path;
}

// One per OS thread that runs blocks: the fibers' stacks and the running block's state.
struct Worker {
  std::vector<FiberStack> stacks;
  std::vector<CudaThread> threads;
  FiberContext sched;
  CudaThread* running = nullptr;
  const Launch* launch = nullptr;
  uint3 block{};
  int nthreads = 0;
  bool failed = false;
  cudaError_t err = cudaSuccess;
  std::string detail;
  std::vector<unsigned char> dsmemStore;
  unsigned char* dsmem = nullptr;
  uint64_t rng = 1;
  sigjmp_buf jb;
  volatile sig_atomic_t inKernel = 0;
  volatile uintptr_t faultAddress = 0;
  void* altStack = nullptr;

  Worker() {
    install_fault_handler();
    altStack = malloc(kAltStackBytes);
    stack_t ss{};
    ss.ss_sp = altStack;
    ss.ss_size = kAltStackBytes;
    sigaltstack(&ss, nullptr);
  }
  ~Worker() {
    stack_t ss{};
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, nullptr);
    free(altStack);
    for (FiberStack& s : stacks) fiber_stack_free(s);
  }

  uint64_t next_random() {  // xorshift64*
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
  }

  std::string where() const {
    char buf[256];
    snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u): ", launch->name.c_str(), block.x, block.y, block.z);
    return buf;
  }

  // A fault found by the scheduler (not by a fiber).
  void fault(cudaError_t code, const std::string& what) {
    if (failed) return;
    failed = true;
    err = code;
    detail = where() + what;
  }
};

thread_local std::unique_ptr<Worker> tl_worker;

Worker& worker() {
  if (!tl_worker) tl_worker.reset(new Worker());
  return *tl_worker;
}

void thread_entry(void* arg) {
  CudaThread* t = static_cast<CudaThread*>(arg);
  Worker& w = *tl_worker;
  w.launch->body();
  t->state = State::Exited;
  fiber_switch(&t->ctx, &w.sched);
  abort();  // an exited fiber is never resumed
}

// Parks the running fiber; returns when the scheduler releases it.
CudaThread& park(State s) {
  Worker& w = *tl_worker;
  CudaThread& t = *w.running;
  t.state = s;
  fiber_switch(&t.ctx, &w.sched);
  return t;
}

std::string site(const CudaThread& t) { return std::string(base_name(t.file)) + ":" + std::to_string(t.line); }

// Releases every warp operation that can complete; false when none could.
bool resolve_warps(Worker& w) {
  bool progressed = false;
  const int n = w.nthreads;
  for (int base = 0; base < n && !w.failed; base += 32) {
    const int lanes = std::min(32, n - base);
    for (int l = 0; l < lanes; ++l) {
      CudaThread& t = w.threads[base + l];
      if (t.state != State::AtWarp) continue;
      const unsigned mask = t.mask;
      if (!((mask >> l) & 1u)) {
        char buf[200];
        snprintf(buf, sizeof buf, "thread %d calls %s at %s with mask 0x%08x, which does not include its lane %d",
                 t.linear, warp_op_name(t.kind), site(t).c_str(), mask, l);
        w.fault(cudaErrorIllegalInstruction, buf);
        return false;
      }
      // The lanes the operation waits for: those of the mask that exist and have not exited (CUDA requires
      // only the non-exited lanes named in the mask to take part).
      unsigned members = 0;
      for (int m = 0; m < lanes; ++m)
        if (((mask >> m) & 1u) && w.threads[base + m].state != State::Exited) members |= 1u << m;
      bool ready = true;
      for (int m = 0; m < 32 && ready; ++m) {
        if (!((members >> m) & 1u)) continue;
        const CudaThread& o = w.threads[base + m];
        if (o.state != State::AtWarp || o.mask != mask) ready = false;
      }
      if (!ready) continue;
      // Every lane taking part waits here: they must be at the same operation.
      for (int m = 0; m < 32; ++m) {
        if (!((members >> m) & 1u)) continue;
        const CudaThread& o = w.threads[base + m];
        if (o.kind != t.kind || o.width != t.width || o.file != t.file || o.line != t.line) {
          w.fault(cudaErrorIllegalInstruction, "lanes of warp " + std::to_string(base / 32) + " meet at different warp operations: " +
                                                   warp_op_name(t.kind) + " at " + site(t) + " and " +
                                                   warp_op_name(o.kind) + " at " + site(o));
          return false;
        }
      }
      const int width = t.width;
      uint64_t ballot = 0;
      for (int m = 0; m < 32; ++m)
        if ((members >> m) & 1u) ballot |= (uint64_t)(w.threads[base + m].value != 0) << m;
      for (int m = 0; m < 32; ++m) {
        if (!((members >> m) & 1u)) continue;
        CudaThread& o = w.threads[base + m];
        const int seg = m & ~(width - 1);
        int src = m;
        switch (t.kind) {
          case W_SHFL: src = seg | (o.param & (width - 1)); break;
          case W_SHFL_XOR: src = m ^ o.param; if (src >= seg + width) src = m; break;
          case W_SHFL_UP: src = m - o.param; if (src < seg) src = m; break;
          case W_SHFL_DOWN: src = m + o.param; if (src >= seg + width) src = m; break;
          default: break;
        }
        if (t.kind == W_BALLOT) {
          o.result = ballot;
        } else if (t.kind != W_SYNC) {
          if (src < 0 || src >= 32 || !((members >> src) & 1u)) {
            char buf[200];
            snprintf(buf, sizeof buf, "%s at %s: lane %d reads lane %d, which is not in mask 0x%08x or has exited "
                     "(undefined)", warp_op_name(t.kind), site(t).c_str(), m, src, mask);
            w.fault(cudaErrorIllegalInstruction, buf);
            return false;
          }
          o.result = w.threads[base + src].value;
        }
      }
      for (int m = 0; m < 32; ++m)
        if ((members >> m) & 1u) w.threads[base + m].state = State::Runnable;
      progressed = true;
    }
  }
  return progressed;
}

// Releases the block barrier when every thread waits at it; reports a barrier that cannot complete.
bool resolve_barrier(Worker& w) {
  int atBarrier = 0, exited = 0, atWarp = 0;
  const CudaThread* first = nullptr;
  for (const CudaThread& t : w.threads) {
    if (t.state == State::AtBarrier) {
      ++atBarrier;
      if (!first) first = &t;
    } else if (t.state == State::Exited) {
      ++exited;
    } else if (t.state == State::AtWarp) {
      ++atWarp;
    }
  }
  if (exited == w.nthreads) return false;
  if (atBarrier > 0 && atWarp == 0) {
    if (exited > 0) {
      w.fault(cudaErrorIllegalInstruction,
              "__syncthreads at " + site(*first) + " is reached by " + std::to_string(atBarrier) + " of " +
                  std::to_string(w.nthreads) + " threads; " + std::to_string(exited) +
                  " exited without reaching it (a barrier must be reached by every thread of the block)");
      return false;
    }
    for (const CudaThread& t : w.threads)
      if (t.file != first->file || t.line != first->line || t.kind != first->kind) {
        int same = 0;
        for (const CudaThread& u : w.threads) same += u.file == first->file && u.line == first->line;
        w.fault(cudaErrorIllegalInstruction, "threads of the block wait at different barriers: " + site(*first) + " (" +
                                                 std::to_string(same) + " threads) and " + site(t) + " (thread " +
                                                 std::to_string(t.linear) + ")");
        return false;
      }
    int count = 0;
    for (const CudaThread& t : w.threads) count += t.predicate != 0;
    const int kind = first->kind;
    const uint64_t r = kind == BAR_OR ? count > 0 : kind == BAR_AND ? count == w.nthreads : (uint64_t)count;
    for (CudaThread& t : w.threads) {
      t.result = r;
      t.state = State::Runnable;
    }
    return true;
  }
  // Nothing can move: describe who waits where.
  std::string what = "deadlock:";
  for (const CudaThread& t : w.threads) {
    if (t.state == State::AtBarrier) {
      what += " thread " + std::to_string(t.linear) + " waits at __syncthreads at " + site(t) + ";";
      break;
    }
  }
  for (const CudaThread& t : w.threads) {
    if (t.state == State::AtWarp) {
      char buf[160];
      snprintf(buf, sizeof buf, " thread %d waits at %s at %s (mask 0x%08x);", t.linear, warp_op_name(t.kind),
               site(t).c_str(), t.mask);
      what += buf;
      break;
    }
  }
  what += " " + std::to_string(exited) + " exited";
  w.fault(cudaErrorIllegalInstruction, what);
  return false;
}

void run_block_fibers(Worker& w) {
  std::vector<int> order;
  order.reserve(w.nthreads);
  for (;;) {
    order.clear();
    for (int i = 0; i < w.nthreads; ++i)
      if (w.threads[i].state == State::Runnable) order.push_back(i);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[w.next_random() % i]);
    for (int i : order) {
      CudaThread& t = w.threads[i];
      w.running = &t;
      tl_current = &t.ids;
      fiber_switch(&w.sched, &t.ctx);
      tl_current = nullptr;
      w.running = nullptr;
      if (w.failed) return;
    }
    bool all = true;
    for (const CudaThread& t : w.threads) all = all && t.state == State::Exited;
    if (all) return;
    if (resolve_warps(w)) continue;
    if (w.failed || !resolve_barrier(w)) return;
  }
}

cudaError_t run_block(Worker& w, const Launch& L, uint3 bid, uint64_t seed, std::string& detail) {
  const dim3 bd = L.block;
  w.launch = &L;
  w.block = bid;
  w.nthreads = (int)(bd.x * bd.y * bd.z);
  w.failed = false;
  w.err = cudaSuccess;
  w.detail.clear();
  w.rng = seed | 1;
  while ((int)w.stacks.size() < w.nthreads) w.stacks.push_back(fiber_stack_alloc(kStackBytes));
  w.threads.assign(w.nthreads, CudaThread{});
  for (int i = 0; i < w.nthreads; ++i) {
    CudaThread& t = w.threads[i];
    t.linear = i;
    t.lane = i & 31;
    t.warp = i >> 5;
    t.ids.tid = uint3{i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
    t.ids.bid = bid;
    t.ids.bdim = bd;
    t.ids.gdim = L.grid;
    fiber_init(&t.ctx, w.stacks[i], thread_entry, &t);
  }
  if (L.smem) {
    w.dsmemStore.assign(L.smem + 16, 0xFF);  // poison: a read before a write gives NaN, not a plausible value
    w.dsmem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(w.dsmemStore.data()) + 15) & ~(uintptr_t)15);
  } else {
    w.dsmem = nullptr;
  }
  if (sigsetjmp(w.jb, 1)) {  // back from a memory fault in a fiber (fault_handler)
    w.inKernel = 0;
    tl_current = nullptr;
    const uintptr_t a = w.faultAddress;
    const CudaThread* t = w.running;
    w.running = nullptr;
    char buf[128];
    snprintf(buf, sizeof buf, "thread (%u,%u,%u): illegal access at 0x%llx: ", t ? t->ids.tid.x : 0,
             t ? t->ids.tid.y : 0, t ? t->ids.tid.z : 0, (unsigned long long)a);
    std::string what = buf;
    bool stack = false;
    for (const FiberStack& s : w.stacks) stack = stack || s.guard_contains(reinterpret_cast<void*>(a));
    what += stack ? "stack overflow of the CUDA thread" : describe_address(a);
    w.failed = false;
    w.fault(cudaErrorIllegalAddress, what);
    detail = w.detail;
    return w.err;
  }
  w.inKernel = 1;
  run_block_fibers(w);
  w.inKernel = 0;
  if (w.failed) detail = w.detail;
  return w.err;
}

// ---- the helper pool and the grid ------------------------------------------------------------------------------

class Pool {
 public:
  static Pool& instance() {
    static Pool* p = new Pool();  // never destroyed: helpers may still be parked at exit
    return *p;
  }
  int size() const { return (int)threads_.size(); }
  void post(std::function<void()> f) {
    {
      std::lock_guard<std::mutex> lock(m_);
      q_.push_back(std::move(f));
    }
    cv_.notify_one();
  }

 private:
  Pool() {
    const int n = (int)std::max<int64_t>(1, env_int("PAPO_EMU_THREADS", std::max(2u, std::thread::hardware_concurrency())) - 1);
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { loop(); });
    for (auto& t : threads_) t.detach();
  }
  void loop() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [this] { return !q_.empty(); });
        f = std::move(q_.front());
        q_.pop_front();
      }
      f();
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  std::vector<std::thread> threads_;
};

struct GridJob {
  const Launch* launch;
  int64_t total;
  std::atomic<int64_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex m;
  std::condition_variable cv;
  int active = 0;
  cudaError_t err = cudaSuccess;
  std::string detail;

  void participate() {
    Worker& w = worker();
    const dim3 g = launch->grid;
    for (;;) {
      if (stop.load()) return;
      const int64_t b = next.fetch_add(1);
      if (b >= total) return;
      const uint3 bid{(unsigned)(b % g.x), (unsigned)((b / g.x) % g.y), (unsigned)(b / ((int64_t)g.x * g.y))};
      std::string d;
      const cudaError_t e = run_block(w, *launch, bid, launch->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(b + 1)), d);
      if (e != cudaSuccess) {
        std::lock_guard<std::mutex> lock(m);
        if (err == cudaSuccess) err = e, detail = d;
        stop = true;
      }
    }
  }
};

// SIGSEGV/SIGBUS: inside a fiber it is the kernel's fault; anywhere else it goes to the previous handler.
struct sigaction previousSegv, previousBus;

void fault_handler(int sig, siginfo_t* info, void* ctx) {
  Worker* w = tl_worker.get();
  if (w && w->inKernel) {
    w->inKernel = 0;
    w->faultAddress = reinterpret_cast<uintptr_t>(info->si_addr);
    siglongjmp(w->jb, 1);
  }
  const struct sigaction& prev = sig == SIGSEGV ? previousSegv : previousBus;
  if (prev.sa_flags & SA_SIGINFO) {
    if (prev.sa_sigaction) return prev.sa_sigaction(sig, info, ctx);
  } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler) {
    return prev.sa_handler(sig);
  }
  signal(sig, SIG_DFL);  // returning re-executes the access, which now ends the process as it would have
}

}  // namespace

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa{};
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previousSegv);
    sigaction(SIGBUS, &sa, &previousBus);
  });
}

int block_barrier(int kind, int predicate, const char* file, int line) {
  if (!tl_worker || !tl_worker->running) abort();
  CudaThread& t = *tl_worker->running;
  t.kind = kind;
  t.predicate = predicate;
  t.file = file;
  t.line = line;
  park(State::AtBarrier);
  return (int)t.result;
}

uint64_t warp_op(int kind, unsigned mask, uint64_t value, int param, int width, const char* file, int line) {
  if (!tl_worker || !tl_worker->running) abort();
  if (width < 1 || width > 32 || (width & (width - 1)))
    device_fault(cudaErrorIllegalInstruction, "%s at %s:%d with width %d (a power of 2 up to 32)", warp_op_name(kind),
                 base_name(file), line, width);
  CudaThread& t = *tl_worker->running;
  t.kind = kind;
  t.mask = mask;
  t.value = value;
  t.param = param;
  t.width = width;
  t.file = file;
  t.line = line;
  park(State::AtWarp);
  return t.result;
}

void device_fault(cudaError_t code, const char* fmt, ...) {
  Worker* w = tl_worker.get();
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (!w || !w->running) {
    fprintf(stderr, "papo-kernels emulator: device fault outside a kernel: %s\n", buf);
    abort();
  }
  CudaThread& t = *w->running;
  char who[96];
  snprintf(who, sizeof who, "thread (%u,%u,%u): ", t.ids.tid.x, t.ids.tid.y, t.ids.tid.z);
  w->fault(code, std::string(who) + buf);
  t.state = State::Exited;
  fiber_switch(&t.ctx, &w->sched);
  abort();
}

unsigned char* dynamic_smem() {
  if (!tl_worker || !tl_worker->running) abort();
  return tl_worker->dsmem;
}

cudaError_t run_grid(const Launch& launch, std::string& detail) {
  GridJob job;
  job.launch = &launch;
  job.total = (int64_t)launch.grid.x * launch.grid.y * launch.grid.z;
  Pool& pool = Pool::instance();
  const int helpers = (int)std::min<int64_t>(pool.size(), job.total - 1);
  for (int i = 0; i < helpers; ++i) {
    {
      std::lock_guard<std::mutex> lock(job.m);
      ++job.active;
    }
    pool.post([&job] {
      job.participate();
      std::lock_guard<std::mutex> lock(job.m);
      if (--job.active == 0) job.cv.notify_all();
    });
  }
  job.participate();
  std::unique_lock<std::mutex> lock(job.m);
  job.cv.wait(lock, [&] { return job.active == 0; });
  detail = job.detail;
  return job.err;
}

}  // namespace papo_emu
