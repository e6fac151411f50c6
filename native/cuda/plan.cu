#include "cuda/plan.h"

#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "core/error.h"
#include "cuda/settings.h"

namespace papo {
namespace cuda {

namespace {

using ShapeFn = bool (*)(const ShapeKey&, const CudaTuning&, LaunchShape&);

struct KernelVersion {
  int32_t id;
  const char* name;      // as in the docs, tests and benchmarks
  RunRows run;
  ShapeFn shape;
  int32_t fallback;      // planned where `shape` says this version cannot run the key
  int32_t apart;         // planned for the flows whose forward and backward phases are apart
};

// One row per version. A new version adds its row (and its id to CudaKernel): nothing else here changes.
//  - k1 is k2's kernel on a full grid, a fused call's chunk in two launches: 2 reads of each row from memory.
//  - Flows with phases apart (in place, the sequence phase, the forward alone) read each row once per phase and
//    re-read nothing from L2, so the fast versions run them as k1 does: every SM full.
//  - k3 holds a row pair on chip for one fused pass only; where it does not fit (V, before sm_90), k2 runs.
//  - k4 splits a row pair over blocks by column slices for one fused pass: it runs every key.
const KernelVersion kVersions[] = {
    {KERNEL_K0_NAIVE, "k0 naive", run_rows_k0, shape_k0, KERNEL_K0_NAIVE, KERNEL_K0_NAIVE},
    {KERNEL_K1_TWO_PASS, "k1 two-pass", run_rows_k1, shape_k1, KERNEL_K1_TWO_PASS, KERNEL_K1_TWO_PASS},
    {KERNEL_K2_FUSED, "k2 fused", run_rows_k2, shape_k2, KERNEL_K2_FUSED, KERNEL_K1_TWO_PASS},
    {KERNEL_K3_CLUSTER, "k3 cluster", run_rows_k3, shape_k3, KERNEL_K2_FUSED, KERNEL_K1_TWO_PASS},
    {KERNEL_K4_SPLIT, "k4 split rows", run_rows_k4, shape_k4, KERNEL_K4_SPLIT, KERNEL_K1_TWO_PASS},
};

const KernelVersion* version(int32_t id) {
  for (const KernelVersion& v : kVersions)
    if (v.id == id) return &v;
  return nullptr;
}

// What the cache tells plans apart by.
using Key = std::tuple<int, int32_t, int32_t, int32_t, int64_t, bool, int32_t, int32_t, int, int, int, int, int64_t>;

Plan make_plan(const ShapeKey& key, int32_t requested, Flow flow, const CudaTuning& tuning) {
  int32_t id = requested;
  // The tuning's version replaces the fast default (backend 'cuda'); 'cuda-naive' stays the naive chain.
  if (requested != KERNEL_K0_NAIVE && tuning.kernel) {
    if (!version(tuning.kernel) || tuning.kernel == KERNEL_K0_NAIVE) {
      std::string known;
      for (const KernelVersion& v : kVersions)
        if (v.id != KERNEL_K0_NAIVE) known += (known.empty() ? "" : ", ") + std::to_string(v.id) + " (" + v.name + ")";
      throw Error(ErrorCode::InvalidArgument,
                  "PAPO_CUDA_KERNEL: expected " + known + ", got " + std::to_string(tuning.kernel));
    }
    id = tuning.kernel;
  }
  const KernelVersion* v = version(id);
  if (!v) throw Error(ErrorCode::Internal, "no CUDA kernel version " + std::to_string(id));
  if (flow != FLOW_FUSED) v = version(v->apart);
  Plan p;
  // Each fallback is a version that runs more keys; the chain ends at one that takes every key.
  for (int hops = 0; !v->shape(key, tuning, p.launch); ++hops) {
    if (v->fallback == v->id || hops > 8)
      throw Error(ErrorCode::Internal, std::string(v->name) + " cannot run this call");
    v = version(v->fallback);
    p.launch = LaunchShape();
  }
  p.run = v->run;
  p.kernel = v->id;
  p.name = v->name;
  p.terms = flow == FLOW_LOG_PROBS ? TERMS_NONE : flow == FLOW_SEQUENCE ? TERMS_HOST : TERMS_PER_ROW;
  return p;
}

}  // namespace

const Plan& plan(const ShapeKey& key, int32_t requested, Flow flow, const CudaTuning& tuning) {
  static std::mutex mu;
  static std::map<Key, Plan> cache;  // node-based: references stay valid as plans are added
  const Key k{key.device, key.dtype, key.gradType, requested, key.V, key.masked, (int32_t)flow, tuning.kernel,
              tuning.blocks, tuning.cluster, tuning.k3Buffers, tuning.k3CoResident, tuning.k4Slice};
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(k);
  if (it != cache.end()) return it->second;
  return cache.emplace(k, make_plan(key, requested, flow, tuning)).first->second;
}

const CudaTuning& tuning_of(const CudaExec& exec) { return exec.tuning ? *exec.tuning : settings().tuning; }

}  // namespace cuda
}  // namespace papo
