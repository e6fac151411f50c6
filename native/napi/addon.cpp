// The N-API surface, kept thin: parse (napi/args.cpp), run a backend on this thread or on a worker thread, and
// turn papo::Error into a JavaScript Error carrying a stable `code`. Nothing here may abort the process.
#include <napi.h>

#include <functional>
#include <new>
#include <string>

#include "cpu/papo_cpu.h"
#include "core/thread_pool.h"
#include "core/vocab_merge.h"
#include "cuda/device_probe.h"
#include "cuda/papo_cuda.h"
#include "args.h"
#include "device_tensors.h"
#include "host_buffers.h"
#include "js_errors.h"
#include "napi/enums.h"
#ifdef PAPO_CUDA_EMULATED
#include "emulator_hooks.h"
#endif

#ifndef PAPO_VERSION
#define PAPO_VERSION "0.0.0"
#endif

namespace papo {
namespace {

PapoMetrics run_papo(const Target& target, const PapoCall& call) {
  if (target.backend == Backend::Cpu) return papo_loss_cpu(call);
  return papo_loss_cuda(call, target.cuda);
}

PapoMetrics run_sharded_papo(const Target& target, const ShardedPapoCall& call) {
  if (target.backend != Backend::Cpu || target.cuda.onDevice)
    throw Error(ErrorCode::InvalidArgument, "shards: one call over vocabulary shards runs on the cpu backend only");
  return papo_loss_cpu_sharded(call);
}

int run_log_probs(const Target& target, const LogProbsCall& call) {
  if (target.backend == Backend::Cpu) log_probs_cpu(call);
  else log_probs_cuda(call, target.cuda);
  return 0;
}


Napi::Value metrics_to_js(Napi::Env env, const PapoMetrics& m) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("loss", m.loss);
  o.Set("pgLoss", m.pgLoss);
  o.Set("klLoss", m.klLoss);
  o.Set("perceptionKl", m.perceptionKl);
  o.Set("entropyLoss", m.entropyLoss);
  o.Set("maskedEntropyLoss", m.maskedEntropyLoss);
  o.Set("clipFrac", m.clipFrac);
  o.Set("dualClipFrac", m.dualClipFrac);
  o.Set("approxKl", m.approxKl);
  o.Set("meanEntropy", m.meanEntropy);
  o.Set("meanMaskedEntropy", m.meanMaskedEntropy);
  o.Set("tokens", m.tokens);
  if (m.rolloutCorrection != ROLLOUT_NONE) {
    o.Set("rolloutCorrectionMean", m.rolloutCorrectionMean);
    o.Set(m.rolloutCorrection == ROLLOUT_MASK ? "rolloutCorrectionMaskedFrac" : "rolloutCorrectionTruncatedFrac",
          m.rolloutCorrectionBoundFrac);
  }
  if (m.hasTopP) o.Set("perceptionKeptFrac", m.perceptionKeptFrac);
  if (m.hasSft) o.Set("sftLoss", m.sftLoss);
  return o;
}

// A call on a libuv worker thread. The descriptor (and with it every buffer it names) is held by a persistent
// reference until the promise settles, so the garbage collector cannot free an input mid-call.
template <class Call, class Result>
class Worker : public Napi::AsyncWorker {
 public:
  using Run = Result (*)(const Target&, const Call&);
  using ToJs = Napi::Value (*)(Napi::Env, const Result&);
  Worker(Napi::Env env, Napi::Object desc, Target target, Call call, Run run, ToJs to_js)
      : Napi::AsyncWorker(env, "papo-kernels"),
        deferred_(Napi::Promise::Deferred::New(env)),
        keep_(Napi::Persistent(desc)),
        target_(target),
        call_(call),
        run_(run),
        to_js_(to_js) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    failed_ = !guarded([&] { result_ = run_(target_, call_); }, code_, message_);
  }
  // Settles the promise on the JavaScript thread. When the worker thread that made the call is being torn down
  // (terminate(), process.exit() in it, an uncaught exception), this still runs, from the environment's
  // teardown, where no JavaScript can run: settling then fails with an exception that must not leave this
  // callback (node-addon-api would rethrow it and std::terminate the whole process). Nobody is left to see
  // the promise, so the failure is dropped; with the environment alive it rejects the promise instead.
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    try {
      Napi::HandleScope scope(env);
      try {
        if (status != napi_ok) failed_ = true, message_ = "the call did not run: status " + std::to_string(status);
        if (!failed_) deferred_.Resolve(to_js_(env, result_));
        else deferred_.Reject(make_error(env, code_, message_).Value());
      } catch (const Napi::Error& e) {
        deferred_.Reject(e.Value());
      }
    } catch (...) {
    }
    delete this;
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference keep_;
  Target target_;
  Call call_;
  Run run_;
  ToJs to_js_;
  Result result_{};
  bool failed_ = false;
  ErrorCode code_ = ErrorCode::Internal;
  std::string message_;
};

// papoLoss(desc, async) / logProbs(desc, async): the shared shape of both entry points.
template <class Call, class Result>
Napi::Value entry(const Napi::CallbackInfo& info, Call (*parse)(const Napi::Object&),
                  Result (*run)(const Target&, const Call&), Napi::Value (*to_js)(Napi::Env, const Result&)) {
  Napi::Env env = info.Env();
  ErrorCode code = ErrorCode::Internal;
  std::string message;
  if (info.Length() < 2 || !info[0].IsObject()) {
    make_error(env, ErrorCode::InvalidArgument, "expected (descriptor, async)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const Napi::Object desc = info[0].As<Napi::Object>();
  const bool async = info[1].ToBoolean().Value();
  Call call;
  Target target;
  if (!guarded([&] { target = parse_target(desc), call = parse(desc); }, code, message)) {
    Napi::Error e = make_error(env, code, message);
    if (!async) {
      e.ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
    d.Reject(e.Value());
    return d.Promise();
  }
  if (async) {
    auto* w = new Worker<Call, Result>(env, desc, target, call, run, to_js);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }
  Result result{};
  if (!guarded([&] { result = run(target, call); }, code, message)) {
    make_error(env, code, message).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return to_js(env, result);
}

int run_vocab_stats(const Target& target, const VocabStatsCall& call) {
  if (target.backend == Backend::Cpu) vocab_shard_stats_cpu(call);
  else vocab_shard_stats_cuda(call, target.cuda);
  return 0;
}

Napi::Value undefined_js(Napi::Env env, const int&) { return env.Undefined(); }

Napi::Value PapoLoss(const Napi::CallbackInfo& info) {
  return entry<PapoCall, PapoMetrics>(info, parse_papo_call, run_papo, metrics_to_js);
}

Napi::Value PapoLossShards(const Napi::CallbackInfo& info) {
  return entry<ShardedPapoCall, PapoMetrics>(info, parse_sharded_papo_call, run_sharded_papo, metrics_to_js);
}

Napi::Value LogProbs(const Napi::CallbackInfo& info) {
  return entry<LogProbsCall, int>(info, parse_log_probs_call, run_log_probs, undefined_js);
}

Napi::Value VocabShardStats(const Napi::CallbackInfo& info) {
  return entry<VocabStatsCall, int>(info, parse_vocab_stats_call, run_vocab_stats, undefined_js);
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CudaProbe cuda = probe_cuda();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", PAPO_VERSION);
  o.Set("cpuIsa", cpu_isa());
  o.Set("threads", ThreadPool::instance().size());
  o.Set("cudaBuilt", cuda.built);
  o.Set("cudaRuntimeVersion", cuda.runtimeVersion);
  o.Set("cudaDriverVersion", cuda.driverVersion);
  o.Set("cudaArchitectures", cuda.architectures);
  o.Set("cudaStatus", cuda.status);
  Napi::Array devices = Napi::Array::New(env, cuda.devices.size());
  for (size_t i = 0; i < cuda.devices.size(); ++i) {
    const CudaDevice& d = cuda.devices[i];
    Napi::Object dev = Napi::Object::New(env);
    dev.Set("index", d.index);
    dev.Set("name", d.name);
    dev.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
    dev.Set("totalMemory", (double)d.totalMemory);
    dev.Set("multiprocessors", d.multiprocessors);
    devices.Set((uint32_t)i, dev);
  }
  o.Set("cudaDevices", devices);
  return o;
}

// merge_exp over a Float64Array, in place: lets the tests hold core/vocab_merge.cpp and lib/vocab-stats.ts to the
// same bits directly (through the loss, a last-bit difference of the merge rarely shows).
Napi::Value MergeExp(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    make_error(info.Env(), ErrorCode::InvalidArgument, "expected a Float64Array").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Napi::Float64Array a = info[0].As<Napi::Float64Array>();
  for (size_t i = 0; i < a.ElementLength(); ++i) a[i] = merge_exp(a[i]);
  return info.Env().Undefined();
}

Napi::Value CpuExpFloor(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), cpu_exp_floor()); }

Napi::Value CpuCopyFloor(const Napi::CallbackInfo& info) {
  const double bytes = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(bytes >= 0 && bytes <= 68719476736.0)) {
    make_error(info.Env(), ErrorCode::InvalidArgument, "bytes: expected a number of bytes up to 64 GiB").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), cpu_copy_floor((int64_t)bytes));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("papoLoss", Napi::Function::New(env, PapoLoss, "papoLoss"));
  exports.Set("papoLossShards", Napi::Function::New(env, PapoLossShards, "papoLossShards"));
  exports.Set("logProbs", Napi::Function::New(env, LogProbs, "logProbs"));
  exports.Set("vocabShardStats", Napi::Function::New(env, VocabShardStats, "vocabShardStats"));
  exports.Set("mergeExp", Napi::Function::New(env, MergeExp, "mergeExp"));
  exports.Set("cpuExpFloor", Napi::Function::New(env, CpuExpFloor, "cpuExpFloor"));
  exports.Set("cpuCopyFloor", Napi::Function::New(env, CpuCopyFloor, "cpuCopyFloor"));
  exports.Set("enums", enum_tables(env));
  init_device_tensors(env, exports);
  init_host_buffers(env, exports);
#ifdef PAPO_CUDA_EMULATED
  init_emulator_hooks(env, exports);  // emuInjectFault, emuStats, emuReset: the emulated build's tests only
#endif
  return exports;
}

}  // namespace
}  // namespace papo

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return papo::Init(env, exports); }

NODE_API_MODULE(papo_kernels, InitAddon)
