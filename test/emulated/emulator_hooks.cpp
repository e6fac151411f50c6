#include "emulator_hooks.h"

#include <string>
#include <vector>

#include <papo_emulator/emulator.h>
#include "napi/js_errors.h"

namespace papo {

namespace {

// emuInjectFault(kind, nth, times = 1): the nth next call of that kind fails, and the times - 1 after it
// (emulator.h lists the kinds).
Napi::Value InjectFault(const Napi::CallbackInfo& info) {
  return guarded_js(info.Env(), [&]() -> Napi::Value {
    const std::string kind = info[0].ToString().Utf8Value();
    const double nth = info[1].ToNumber().DoubleValue();
    if (!(nth >= 0 && nth < 1e9)) throw Error(ErrorCode::InvalidArgument, "nth: expected a count >= 0");
    const double times = info.Length() > 2 && info[2].IsNumber() ? info[2].ToNumber().DoubleValue() : 1;
    if (!(times >= 1 && times < 1e9)) throw Error(ErrorCode::InvalidArgument, "times: expected a count >= 1");
    if (!papo_emu::inject_fault(kind, (int)nth, (int)times))
      throw Error(ErrorCode::InvalidArgument,
                  "kind: expected 'cudaMalloc', 'cudaHostAlloc', 'launch' or 'memcpy', got '" + kind + "'");
    return info.Env().Undefined();
  });
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  const papo_emu::Stats s = papo_emu::stats();
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("deviceSyncs", (double)s.deviceSyncs);
  o.Set("hostAllocs", (double)s.hostAllocs);
  o.Set("launches", (double)s.launches);
  o.Set("deviceQueries", (double)s.deviceQueries);
  o.Set("liveHostBytes", (double)s.liveHostBytes);
  o.Set("liveDeviceBytes", (double)s.liveDeviceBytes);
  o.Set("mallocs", (double)s.mallocs);
  o.Set("frees", (double)s.frees);
  o.Set("deviceDrains", (double)s.deviceDrains);
  o.Set("poolAllocs", (double)s.poolAllocs);
  o.Set("poolFrees", (double)s.poolFrees);
  o.Set("poolGrowths", (double)s.poolGrowths);
  o.Set("poolReleases", (double)s.poolReleases);
  o.Set("apiCalls", (double)s.apiCalls);
  Napi::Object byName = Napi::Object::New(env);
  for (const auto& kv : s.apiCallsByName) byName.Set(kv.first, (double)kv.second);
  o.Set("apiCallsByName", byName);
  o.Set("copiesToHost", (double)s.copiesToHost);
  o.Set("bytesToHost", (double)s.bytesToHost);
  o.Set("copiesToDevice", (double)s.copiesToDevice);
  o.Set("bytesToDevice", (double)s.bytesToDevice);
  o.Set("pageableCopies", (double)s.pageableCopies);
  Napi::Array contexts = Napi::Array::New(env, s.contexts.size());
  for (size_t i = 0; i < s.contexts.size(); ++i) contexts.Set((uint32_t)i, s.contexts[i]);
  o.Set("contexts", contexts);
  Napi::Object kernels = Napi::Object::New(env);
  for (const auto& k : s.kernels) kernels.Set(k.first, (double)k.second);
  o.Set("kernels", kernels);
  return o;
}

// emuKernelRuns(): [{ name, device, startMs, endMs }] of the kernels run since the last emuReset.
Napi::Value KernelRuns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::vector<papo_emu::KernelRun> runs = papo_emu::kernel_runs();
  Napi::Array a = Napi::Array::New(env, runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", runs[i].name);
    o.Set("device", runs[i].device);
    o.Set("startMs", runs[i].startMs);
    o.Set("endMs", runs[i].endMs);
    a.Set((uint32_t)i, o);
  }
  return a;
}

// emuKernelDelay(name, ms): every kernel of that launch name sleeps ms first (0 ends it; emuReset ends all).
Napi::Value KernelDelay(const Napi::CallbackInfo& info) {
  return guarded_js(info.Env(), [&]() -> Napi::Value {
    const double ms = info[1].ToNumber().DoubleValue();
    if (!(ms >= 0 && ms <= 60000)) throw Error(ErrorCode::InvalidArgument, "ms: expected 0 to 60000");
    papo_emu::set_kernel_delay(info[0].ToString().Utf8Value(), (int)ms);
    return info.Env().Undefined();
  });
}

Napi::Value Reset(const Napi::CallbackInfo& info) {
  papo_emu::reset_stats();
  for (const char* k : {"cudaMalloc", "cudaHostAlloc", "launch", "memcpy"}) papo_emu::inject_fault(k, 0);
  return info.Env().Undefined();
}

}  // namespace

void init_emulator_hooks(Napi::Env env, Napi::Object exports) {
  exports.Set("emuInjectFault", Napi::Function::New(env, InjectFault, "emuInjectFault"));
  exports.Set("emuStats", Napi::Function::New(env, Stats, "emuStats"));
  exports.Set("emuReset", Napi::Function::New(env, Reset, "emuReset"));
  exports.Set("emuKernelRuns", Napi::Function::New(env, KernelRuns, "emuKernelRuns"));
  exports.Set("emuKernelDelay", Napi::Function::New(env, KernelDelay, "emuKernelDelay"));
}

}  // namespace papo
