// Emulated streams and events. Each stream is a FIFO run by a thread of its own, so work is asynchronous and
// in order, and streams run concurrently. The ordering between streams is exactly what CUDA documents:
//   - an operation on the legacy default stream (0, cudaStreamLegacy) waits for all earlier work of every
//     blocking stream of its device, and work on a blocking stream waits for earlier legacy work;
//   - streams created with cudaStreamNonBlocking are ordered with nothing but their own work and the events
//     they are told to wait for.
// So code that forgot a cudaStreamWaitEvent, or relied on the legacy stream to order a non-blocking one, runs
// its kernel before its data arrives (the copies below take a little while on purpose) and reads poison.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <thread>

#include "internal.h"

struct CUstream_st {
  int device = 0;
  bool nonBlocking = false;
  bool legacy = false;
  std::mutex m;
  std::condition_variable cv;
  struct Op {
    const char* what;
    papo_emu::OpBody body;
    std::vector<papo_emu::CompletionPtr> deps;
    papo_emu::CompletionPtr done;
  };
  std::deque<Op> q;
  papo_emu::CompletionPtr tail;  // of the last operation enqueued
  std::shared_ptr<papo_emu::Demand> demand = std::make_shared<papo_emu::Demand>();
  uint64_t seq = 0;
  bool destroyed = false;
  cudaError_t sticky = cudaSuccess;  // a failed operation faults the stream until a synchronisation reports it
  std::string stickyDetail;
};

struct CUevent_st {
  int device = 0;
  std::mutex m;
  papo_emu::CompletionPtr c;  // the last record's marker; null: never recorded (complete)
  bool timing = true;
};

namespace papo_emu {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Never destroyed: the streams' detached threads may still run while the process runs its exit handlers.
std::mutex& regMu = *new std::mutex;
std::vector<CUstream_st*>& live = *new std::vector<CUstream_st*>;  // every stream with a thread, the legacy ones included
CUstream_st* legacyOf[16] = {};

void run_stream(CUstream_st* st) {
  for (;;) {
    CUstream_st::Op op;
    {
      std::unique_lock<std::mutex> lock(st->m);
      st->cv.wait(lock, [st] { return !st->q.empty() || st->destroyed; });
      if (st->q.empty()) break;
      op = std::move(st->q.front());
      st->q.pop_front();
    }
    {  // lazy: wait until the operation is wanted, or until nothing has wanted it for a while
      static const int64_t lazyMs = env_int("PAPO_EMU_LAZY_MS", 200);
      Demand& dm = *st->demand;
      std::unique_lock<std::mutex> lock(dm.m);
      dm.cv.wait_for(lock, std::chrono::milliseconds(lazyMs), [&] { return dm.upTo >= op.done->seq; });
    }
    cudaError_t err = cudaSuccess;
    std::string detail;
    for (const CompletionPtr& d : op.deps) {
      std::string dd;
      const cudaError_t e = d->wait(&dd);
      if (e != cudaSuccess && err == cudaSuccess) err = e, detail = dd;
    }
    {
      std::lock_guard<std::mutex> lock(st->m);
      if (err == cudaSuccess && st->sticky != cudaSuccess) err = st->sticky, detail = st->stickyDetail;
    }
    if (err == cudaSuccess) err = op.body(detail);
    if (err != cudaSuccess) {
      std::lock_guard<std::mutex> lock(st->m);
      if (st->sticky == cudaSuccess) st->sticky = err, st->stickyDetail = detail;
    }
    op.done->signal(err, detail);
  }
  std::lock_guard<std::mutex> lock(regMu);
  live.erase(std::find(live.begin(), live.end(), st));
  delete st;
}

CUstream_st* start(CUstream_st* st) {
  {
    std::lock_guard<std::mutex> lock(regMu);
    live.push_back(st);
  }
  std::thread(run_stream, st).detach();
  return st;
}

CUstream_st* legacy_stream(int device) {
  std::lock_guard<std::mutex> lock(regMu);
  CUstream_st*& s = legacyOf[device & 15];
  if (!s) {
    s = new CUstream_st();
    s->device = device;
    s->legacy = true;
    live.push_back(s);
    std::thread(run_stream, s).detach();
  }
  return s;
}

// cudaStreamPerThread: a blocking stream of the host thread's own (it does not wait for other blocking streams).
CUstream_st* per_thread_stream() {
  static thread_local CUstream_st* s = nullptr;
  if (!s) {
    s = new CUstream_st();
    s->device = host_thread().device;
    start(s);
  }
  return s;
}

CUstream_st* resolve(cudaStream_t s) {
  if (is_legacy(s)) return legacy_stream(host_thread().device);
  if (s == cudaStreamPerThread) return per_thread_stream();
  return s;
}

std::atomic<uint64_t> globalOrder{0};

// Waits for every tail, the most recently enqueued first: work that nothing orders after another runs before
// it, also when a device-wide synchronisation demands both.
cudaError_t wait_newest_first(std::vector<CompletionPtr> tails, std::string* detail) {
  std::sort(tails.begin(), tails.end(), [](const CompletionPtr& a, const CompletionPtr& b) { return a->order > b->order; });
  cudaError_t first = cudaSuccess;
  for (const CompletionPtr& t : tails) {
    std::string d;
    const cudaError_t e = t->wait(&d);
    if (e != cudaSuccess && first == cudaSuccess) first = e, *detail = d;
  }
  return first;
}

}  // namespace

void Demand::want(uint64_t seq) {
  {
    std::lock_guard<std::mutex> lock(m);
    if (seq <= upTo) return;
    upTo = seq;
  }
  cv.notify_all();
}

void Completion::signal(cudaError_t e, const std::string& d) {
  {
    std::lock_guard<std::mutex> lock(m);
    err = e;
    detail = d;
    when = now_s();
    done = true;
  }
  cv.notify_all();
}

cudaError_t Completion::wait(std::string* d) {
  if (demand) demand->want(seq);
  std::unique_lock<std::mutex> lock(m);
  cv.wait(lock, [this] { return done; });
  if (d) *d = detail;
  return err;
}

bool Completion::finished() {
  std::lock_guard<std::mutex> lock(m);
  return done;
}

bool is_legacy(cudaStream_t s) { return s == nullptr || s == cudaStreamLegacy; }

int stream_device(cudaStream_t s) { return resolve(s)->device; }

CompletionPtr enqueue(cudaStream_t stream, const char* what, OpBody body, std::vector<CompletionPtr> deps) {
  ensure_context();
  CUstream_st* st = resolve(stream);
  CUstream_st::Op op{what, std::move(body), std::move(deps), std::make_shared<Completion>()};
  CompletionPtr done = op.done;
  std::lock_guard<std::mutex> reg(regMu);
  done->demand = st->demand;
  if (st->legacy) {
    for (CUstream_st* x : live)
      if (x != st && x->device == st->device && !x->nonBlocking && !x->legacy && x->tail) op.deps.push_back(x->tail);
  } else if (!st->nonBlocking) {
    CUstream_st* l = legacyOf[st->device & 15];
    if (l && l->tail) op.deps.push_back(l->tail);
  }
  {
    std::lock_guard<std::mutex> lock(st->m);
    done->seq = ++st->seq;
    done->order = ++globalOrder;
    st->tail = done;
    st->q.push_back(std::move(op));
  }
  st->cv.notify_one();
  return done;
}

cudaError_t synchronize_stream(cudaStream_t stream) {
  CUstream_st* st = resolve(stream);
  CompletionPtr tail;
  {
    std::lock_guard<std::mutex> lock(st->m);
    tail = st->tail;
  }
  if (!tail) return cudaSuccess;
  std::string detail;
  const cudaError_t err = tail->wait(&detail);
  if (err != cudaSuccess) {
    std::lock_guard<std::mutex> lock(st->m);
    st->sticky = cudaSuccess;  // reported now: later work on the stream runs again
    st->stickyDetail.clear();
    return fail(err, detail);
  }
  return cudaSuccess;
}

cudaError_t synchronize_device(int device) {
  std::vector<CUstream_st*> streams;
  std::vector<CompletionPtr> tails;
  {
    std::lock_guard<std::mutex> lock(regMu);
    for (CUstream_st* x : live)
      if (x->device == device) {
        std::lock_guard<std::mutex> l2(x->m);
        if (x->tail) tails.push_back(x->tail), streams.push_back(x);
      }
  }
  std::string detail;
  const cudaError_t first = wait_newest_first(tails, &detail);
  if (first != cudaSuccess) {
    std::lock_guard<std::mutex> lock(regMu);
    for (CUstream_st* x : live) {
      std::lock_guard<std::mutex> l2(x->m);
      if (x->device == device) x->sticky = cudaSuccess;
    }
    return fail(first, detail);
  }
  return cudaSuccess;
}

cudaError_t wait_op(cudaStream_t stream, const CompletionPtr& op) {
  std::string detail;
  const cudaError_t err = op->wait(&detail);
  if (err == cudaSuccess) return cudaSuccess;
  CUstream_st* st = resolve(stream);
  {
    std::lock_guard<std::mutex> lock(st->m);
    st->sticky = cudaSuccess;
    st->stickyDetail.clear();
  }
  return fail(err, detail);
}

void drain_device(int device) {
  std::vector<CompletionPtr> tails;
  {
    std::lock_guard<std::mutex> lock(regMu);
    for (CUstream_st* x : live) {
      std::lock_guard<std::mutex> l2(x->m);
      if (x->device == device && x->tail) tails.push_back(x->tail);
    }
  }
  std::string ignored;
  wait_newest_first(tails, &ignored);
}

}  // namespace papo_emu

using namespace papo_emu;

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  EMU_API("cudaStreamCreate");
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  EMU_API("cudaStreamCreateWithFlags");
  if (!stream) return fail(cudaErrorInvalidValue);
  ensure_context();
  CUstream_st* st = new CUstream_st();
  st->device = host_thread().device;
  st->nonBlocking = (flags & cudaStreamNonBlocking) != 0;
  *stream = start(st);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  EMU_API("cudaStreamDestroy");
  if (is_legacy(stream) || stream == cudaStreamPerThread) return fail(cudaErrorInvalidResourceHandle);
  // Like CUDA: returns at once; the stream's thread finishes the queued work, then frees it.
  {
    std::lock_guard<std::mutex> lock(stream->m);
    stream->destroyed = true;
  }
  stream->cv.notify_one();
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  EMU_API("cudaStreamSynchronize");
  return synchronize_stream(stream);
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
  EMU_API("cudaStreamQuery");
  CUstream_st* st = resolve(stream);
  std::lock_guard<std::mutex> lock(st->m);
  return !st->tail || st->tail->finished() ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  EMU_API("cudaStreamWaitEvent");
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  CompletionPtr c;
  {
    std::lock_guard<std::mutex> lock(event->m);
    c = event->c;  // the record as of now, as CUDA specifies
  }
  std::vector<CompletionPtr> deps;
  if (c) deps.push_back(c);
  enqueue(stream, "cudaStreamWaitEvent", [](std::string&) { return cudaSuccess; }, std::move(deps));
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  EMU_API("cudaEventCreate");
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  EMU_API("cudaEventCreateWithFlags");
  if (!event) return fail(cudaErrorInvalidValue);
  ensure_context();
  *event = new CUevent_st();
  (*event)->device = host_thread().device;
  (*event)->timing = !(flags & cudaEventDisableTiming);
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  EMU_API("cudaEventDestroy");
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  delete event;  // the marker's completion is shared, so streams waiting on it are unaffected
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  EMU_API("cudaEventRecord");
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  if (stream_device(stream) != event->device)
    return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: the event and the stream belong to different devices");
  CompletionPtr c = enqueue(stream, "cudaEventRecord", [](std::string&) { return cudaSuccess; });
  std::lock_guard<std::mutex> lock(event->m);
  event->c = c;
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  EMU_API("cudaEventSynchronize");
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  CompletionPtr c;
  {
    std::lock_guard<std::mutex> lock(event->m);
    c = event->c;
  }
  if (!c) return cudaSuccess;
  std::string detail;
  const cudaError_t err = c->wait(&detail);
  return err == cudaSuccess ? cudaSuccess : fail(err, detail);
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  EMU_API("cudaEventQuery");
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lock(event->m);
  return !event->c || event->c->finished() ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  EMU_API("cudaEventElapsedTime");
  if (!ms || !start || !end || !start->timing || !end->timing || !start->c || !end->c)
    return fail(cudaErrorInvalidResourceHandle);
  if (!start->c->finished() || !end->c->finished()) return fail(cudaErrorNotReady);
  *ms = (float)((end->c->when - start->c->when) * 1e3);
  return cudaSuccess;
}
