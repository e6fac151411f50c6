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
#include <time.h>
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

// The grid whose block this OS thread runs has stopped (a block of it faulted): a block waiting on another then
// fails instead of waiting forever for one that will not come.
thread_local const std::atomic<bool>* tl_grid_stopped = nullptr;

constexpr size_t kStackBytes = 64 << 10;
constexpr size_t kAltStackBytes = 64 << 10;

enum class State : uint8_t { Runnable, AtBarrier, AtWarp, AtCluster, AtMbar, Exited };

struct CudaThread {
  DeviceThread ids;
  FiberContext ctx;
  State state = State::Runnable;
  int linear = 0, lane = 0, warp = 0;  // within its block
  int rank = 0;                        // its block's rank in the cluster
  // The operation a parked thread waits at.
  int kind = 0, predicate = 0, param = 0, width = 32;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  const char* file = "";
  int line = 0;
  uint64_t* mbar = nullptr;
  unsigned parity = 0;
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

// An mbarrier in shared memory (the 8 bytes there stay poison: the state lives here). Bulk copies that
// complete on it are performed only when every expected arrival has happened and a thread waits, so shared
// memory read before the wait holds poison, as it may on a GPU.
struct Mbar {
  unsigned count = 0, pending = 0, phase = 0;
  int64_t tx = 0;
  struct Copy {
    void* dst;
    const void* src;
    size_t bytes;
  };
  std::vector<Copy> copies;
};

// One per OS thread that runs blocks: the fibers' stacks and the running cluster's state (a cluster of one
// block without clusters). The blocks of a cluster run together, as a GPU co-schedules them.
struct Worker {
  std::vector<FiberStack> stacks;
  std::vector<CudaThread> threads;  // rank-major: block r's threads at [r * nthreads, (r + 1) * nthreads)
  FiberContext sched;
  CudaThread* running = nullptr;
  const Launch* launch = nullptr;
  uint3 block{};    // the cluster's first block
  int nthreads = 0;  // per block
  int csize = 1;     // blocks in the cluster
  bool failed = false;
  cudaError_t err = cudaSuccess;
  std::string detail;
  std::vector<std::vector<unsigned char>> dsmemStore;
  std::vector<unsigned char*> dsmem;  // per rank
  std::vector<bool> gone;             // per rank: every thread exited (its shared memory is no more)
  std::map<uintptr_t, Mbar> mbars;
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

  int total() const { return nthreads * csize; }

  uint64_t next_random() {  // xorshift64*
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
  }

  std::string where() const {
    char buf[256];
    if (csize == 1)
      snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u): ", launch->name.c_str(), block.x, block.y, block.z);
    else
      snprintf(buf, sizeof buf, "kernel %s, cluster of %d blocks from (%u,%u,%u): ", launch->name.c_str(), csize,
               block.x, block.y, block.z);
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
  for (int r = 0; r < w.csize && !w.failed; ++r)
    for (int wb = 0; wb < w.nthreads && !w.failed; wb += 32) {
      const int base = r * w.nthreads + wb;
      const int lanes = std::min(32, w.nthreads - wb);
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
            w.fault(cudaErrorIllegalInstruction, "lanes of warp " + std::to_string(wb / 32) +
                                                     " meet at different warp operations: " + warp_op_name(t.kind) +
                                                     " at " + site(t) + " and " + warp_op_name(o.kind) + " at " + site(o));
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

// Releases each block's barrier once every thread of the block waits at it; reports one that cannot complete.
bool resolve_block_barriers(Worker& w) {
  bool progressed = false;
  for (int r = 0; r < w.csize; ++r) {
    CudaThread* b = &w.threads[(size_t)r * w.nthreads];
    int atBarrier = 0, exited = 0;
    const CudaThread* first = nullptr;
    for (int i = 0; i < w.nthreads; ++i) {
      if (b[i].state == State::AtBarrier) {
        ++atBarrier;
        if (!first) first = &b[i];
      } else if (b[i].state == State::Exited) {
        ++exited;
      }
    }
    if (atBarrier == 0 || atBarrier + exited < w.nthreads) continue;  // nothing, or others are busy elsewhere
    if (exited > 0) {
      w.fault(cudaErrorIllegalInstruction,
              "__syncthreads at " + site(*first) + " is reached by " + std::to_string(atBarrier) + " of " +
                  std::to_string(w.nthreads) + " threads; " + std::to_string(exited) +
                  " exited without reaching it (a barrier must be reached by every thread of the block)");
      return false;
    }
    for (int i = 0; i < w.nthreads; ++i)
      if (b[i].file != first->file || b[i].line != first->line || b[i].kind != first->kind) {
        int same = 0;
        for (int j = 0; j < w.nthreads; ++j) same += b[j].file == first->file && b[j].line == first->line;
        w.fault(cudaErrorIllegalInstruction, "threads of the block wait at different barriers: " + site(*first) +
                                                 " (" + std::to_string(same) + " threads) and " + site(b[i]) +
                                                 " (thread " + std::to_string(b[i].linear) + ")");
        return false;
      }
    int count = 0;
    for (int i = 0; i < w.nthreads; ++i) count += b[i].predicate != 0;
    const int kind = first->kind;
    const uint64_t res = kind == BAR_OR ? count > 0 : kind == BAR_AND ? count == w.nthreads : (uint64_t)count;
    for (int i = 0; i < w.nthreads; ++i) {
      b[i].result = res;
      b[i].state = State::Runnable;
    }
    progressed = true;
  }
  return progressed;
}

// The cluster barrier: every thread of every block of the cluster.
bool resolve_cluster_barrier(Worker& w) {
  int at = 0, exited = 0;
  for (const CudaThread& t : w.threads) at += t.state == State::AtCluster, exited += t.state == State::Exited;
  if (at == 0 || at + exited < w.total()) return false;
  if (exited > 0) {
    w.fault(cudaErrorIllegalInstruction, "cluster barrier reached by " + std::to_string(at) + " of " +
                                             std::to_string(w.total()) + " threads of the cluster; the others exited");
    return false;
  }
  for (CudaThread& t : w.threads) t.state = State::Runnable;
  return true;
}

// An mbarrier phase completes once every arrival happened and every expected byte landed.
void try_complete(Mbar& m) {
  if (m.pending != 0) return;
  for (const Mbar::Copy& c : m.copies) {
    memcpy(c.dst, c.src, c.bytes);
    m.tx -= (int64_t)c.bytes;
  }
  m.copies.clear();
  if (m.tx != 0) return;
  ++m.phase;
  m.pending = m.count;
}

bool resolve_mbarriers(Worker& w) {
  bool progressed = false;
  for (CudaThread& t : w.threads) {
    if (t.state != State::AtMbar) continue;
    auto it = w.mbars.find(reinterpret_cast<uintptr_t>(t.mbar));
    if (it == w.mbars.end()) {
      w.fault(cudaErrorIllegalInstruction, "thread " + std::to_string(t.linear) + " waits on an mbarrier that was never initialised");
      return false;
    }
    try_complete(it->second);
    if ((it->second.phase & 1u) != t.parity) {
      t.state = State::Runnable;
      progressed = true;
    }
  }
  return progressed;
}

void report_deadlock(Worker& w) {
  std::string what = "deadlock:";
  int exited = 0;
  bool seen[6] = {};
  for (const CudaThread& t : w.threads) {
    if (t.state == State::Exited) ++exited;
    const int s = (int)t.state;
    if (seen[s] || t.state == State::Exited || t.state == State::Runnable) continue;
    seen[s] = true;
    char buf[200];
    switch (t.state) {
      case State::AtBarrier: snprintf(buf, sizeof buf, " thread %d of block %d waits at __syncthreads at %s;", t.linear, t.rank, site(t).c_str()); break;
      case State::AtWarp: snprintf(buf, sizeof buf, " thread %d waits at %s at %s (mask 0x%08x);", t.linear, warp_op_name(t.kind), site(t).c_str(), t.mask); break;
      case State::AtCluster: snprintf(buf, sizeof buf, " thread %d of block %d waits at the cluster barrier;", t.linear, t.rank); break;
      default: snprintf(buf, sizeof buf, " thread %d of block %d waits on an mbarrier whose phase never completes;", t.linear, t.rank); break;
    }
    what += buf;
  }
  what += " " + std::to_string(exited) + " exited";
  w.fault(cudaErrorIllegalInstruction, what);
}

void run_fibers(Worker& w) {
  std::vector<int> order;
  order.reserve(w.total());
  for (;;) {
    order.clear();
    for (int i = 0; i < w.total(); ++i)
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
    // A block whose threads all exited has no shared memory left: poison it, and refuse mapping it.
    for (int r = 0; r < w.csize; ++r) {
      if (w.gone[r] || !w.dsmem[r]) continue;
      bool exited = true;
      for (int i = 0; i < w.nthreads && exited; ++i) exited = w.threads[(size_t)r * w.nthreads + i].state == State::Exited;
      if (exited) w.gone[r] = true, memset(w.dsmem[r], 0xFF, w.launch->smem);
    }
    bool progressed = resolve_warps(w);
    if (!w.failed) progressed = resolve_block_barriers(w) || progressed;
    if (!w.failed) progressed = resolve_cluster_barrier(w) || progressed;
    if (!w.failed) progressed = resolve_mbarriers(w) || progressed;
    if (w.failed) return;
    if (!progressed) return report_deadlock(w);
  }
}

// Runs the cluster whose first block is `first` (a cluster of one block when the launch has none).
cudaError_t run_cluster(Worker& w, const Launch& L, uint3 first, uint64_t seed, std::string& detail) {
  const dim3 bd = L.block;
  w.launch = &L;
  w.block = first;
  w.csize = (int)L.cluster.x;
  w.nthreads = (int)(bd.x * bd.y * bd.z);
  w.failed = false;
  w.err = cudaSuccess;
  w.detail.clear();
  w.rng = seed | 1;
  w.mbars.clear();
  while ((int)w.stacks.size() < w.total()) w.stacks.push_back(fiber_stack_alloc(kStackBytes));
  w.threads.assign(w.total(), CudaThread{});
  w.dsmemStore.resize(w.csize);
  w.dsmem.assign(w.csize, nullptr);
  w.gone.assign(w.csize, false);
  for (int r = 0; r < w.csize; ++r) {
    if (L.smem) {  // poison: a read before a write gives NaN, not a plausible value
      w.dsmemStore[r].assign(L.smem + 16, 0xFF);
      w.dsmem[r] = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(w.dsmemStore[r].data()) + 15) & ~(uintptr_t)15);
    }
    for (int i = 0; i < w.nthreads; ++i) {
      CudaThread& t = w.threads[(size_t)r * w.nthreads + i];
      t.linear = i;
      t.lane = i & 31;
      t.warp = i >> 5;
      t.rank = r;
      t.ids.tid = uint3{i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
      t.ids.bid = uint3{first.x + r, first.y, first.z};
      t.ids.bdim = bd;
      t.ids.gdim = L.grid;
      fiber_init(&t.ctx, w.stacks[(size_t)r * w.nthreads + i], thread_entry, &t);
    }
  }
  if (sigsetjmp(w.jb, 1)) {  // back from a memory fault in a fiber (fault_handler)
    w.inKernel = 0;
    tl_current = nullptr;
    const uintptr_t a = w.faultAddress;
    const CudaThread* t = w.running;
    w.running = nullptr;
    char buf[160];
    snprintf(buf, sizeof buf, "block (%u,%u,%u), thread (%u,%u,%u): illegal access at 0x%llx: ", t ? t->ids.bid.x : 0,
             t ? t->ids.bid.y : 0, t ? t->ids.bid.z : 0, t ? t->ids.tid.x : 0, t ? t->ids.tid.y : 0,
             t ? t->ids.tid.z : 0, (unsigned long long)a);
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
  run_fibers(w);
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
    const int64_t cx = g.x / launch->cluster.x;  // clusters along x
    for (;;) {
      if (stop.load()) return;
      const int64_t c = next.fetch_add(1);
      if (c >= total) return;
      const uint3 first{(unsigned)((c % cx) * launch->cluster.x), (unsigned)((c / cx) % g.y), (unsigned)(c / (cx * g.y))};
      std::string d;
      tl_grid_stopped = &stop;
      const cudaError_t e = run_cluster(w, *launch, first, launch->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(c + 1)), d);
      tl_grid_stopped = nullptr;
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

void spin_pause() {
  if (tl_grid_stopped && tl_grid_stopped->load())
    device_fault(cudaErrorLaunchFailure, "waits for another block of the grid, and a block of the grid faulted");
  const timespec pause{0, 20000};
  nanosleep(&pause, nullptr);
}

unsigned char* dynamic_smem() {
  if (!tl_worker || !tl_worker->running) abort();
  return tl_worker->dsmem[tl_worker->running->rank];
}

// ---- clusters, distributed shared memory, mbarriers and bulk copies (device_prims twins) -----------------------

void cluster_barrier(const char* file, int line) {
  if (!tl_worker || !tl_worker->running) abort();
  CudaThread& t = *tl_worker->running;
  t.file = file;
  t.line = line;
  park(State::AtCluster);
}

unsigned cluster_rank() { return (unsigned)tl_worker->running->rank; }
unsigned cluster_size() { return (unsigned)tl_worker->csize; }

void* map_shared_rank(void* p, unsigned rank) {
  Worker& w = *tl_worker;
  if ((int)rank >= w.csize) device_fault(cudaErrorIllegalAddress, "mapa to block rank %u of a cluster of %d", rank, w.csize);
  if (w.gone[rank]) device_fault(cudaErrorIllegalAddress, "mapa to block rank %u, which has exited", rank);
  const size_t bytes = w.launch->smem;
  for (int r = 0; r < w.csize; ++r) {
    unsigned char* base = w.dsmem[r];
    if (base && (unsigned char*)p >= base && (unsigned char*)p < base + bytes) return w.dsmem[rank] + ((unsigned char*)p - base);
  }
  device_fault(cudaErrorIllegalAddress, "mapa of 0x%llx, which is not in the block's dynamic shared memory",
               (unsigned long long)reinterpret_cast<uintptr_t>(p));
}

namespace {
Mbar& mbar_of(uint64_t* bar, const char* what) {
  Worker& w = *tl_worker;
  if (reinterpret_cast<uintptr_t>(bar) & 7) device_fault(cudaErrorMisalignedAddress, "%s: mbarrier not 8-byte aligned", what);
  auto it = w.mbars.find(reinterpret_cast<uintptr_t>(bar));
  if (it == w.mbars.end()) device_fault(cudaErrorIllegalInstruction, "%s on an mbarrier that was never initialised", what);
  return it->second;
}
}  // namespace

void mbar_init(uint64_t* bar, unsigned count) {
  Worker& w = *tl_worker;
  if (reinterpret_cast<uintptr_t>(bar) & 7) device_fault(cudaErrorMisalignedAddress, "mbarrier.init: not 8-byte aligned");
  Mbar m;
  m.count = m.pending = count;
  w.mbars[reinterpret_cast<uintptr_t>(bar)] = m;
}

void mbar_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
  Mbar& m = mbar_of(bar, "mbarrier.arrive.expect_tx");
  // A phase whose arrivals are in completes once its copies land, whether or not anybody waits for it (here the
  // copies land only when something asks): an arrival for the next phase is legal then, not before.
  if (m.pending == 0) try_complete(m);
  if (m.pending == 0) device_fault(cudaErrorIllegalInstruction, "mbarrier.arrive: more arrivals than its count");
  m.tx += bytes;
  --m.pending;
}

void bulk_copy_g2s(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  if ((reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) | bytes) & 15)
    device_fault(cudaErrorMisalignedAddress, "cp.async.bulk of %u bytes from 0x%llx to 0x%llx: addresses and size must be multiples of 16",
                 bytes, (unsigned long long)reinterpret_cast<uintptr_t>(src), (unsigned long long)reinterpret_cast<uintptr_t>(dst));
  Worker& w = *tl_worker;
  unsigned char* own = w.dsmem[w.running->rank];
  if (!own || (unsigned char*)dst < own || (unsigned char*)dst + bytes > own + w.launch->smem)
    device_fault(cudaErrorIllegalAddress, "cp.async.bulk writes outside the block's dynamic shared memory");
  // Reading the source now catches a bad address in this thread; the data lands when the barrier completes.
  volatile unsigned char probe = *static_cast<const volatile unsigned char*>(src);
  probe = *(static_cast<const volatile unsigned char*>(src) + bytes - 1);
  (void)probe;
  mbar_of(bar, "cp.async.bulk").copies.push_back(Mbar::Copy{dst, src, bytes});
  // Until the barrier says it landed, the destination holds nothing a thread may use: a read of it after the
  // copy was issued (a refill racing its buffer's last readers) sees poison, as it may see either on a GPU.
  memset(dst, 0xFF, bytes);
}

void mbar_wait(uint64_t* bar, unsigned parity) {
  mbar_of(bar, "mbarrier.try_wait");
  CudaThread& t = *tl_worker->running;
  t.mbar = bar;
  t.parity = parity & 1u;
  park(State::AtMbar);
}

cudaError_t run_grid(const Launch& launch, std::string& detail) {
  GridJob job;
  job.launch = &launch;
  job.total = (int64_t)(launch.grid.x / launch.cluster.x) * launch.grid.y * launch.grid.z;  // clusters
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
