// The CUDA kernels checked and timed without Node (ctest runs it; exit 77 = skipped, no device).
//
//   papo_cuda_test            parity: every kernel family (naive, two-pass, fused, cluster, split rows),
//                             host-staged (in several chunks) and device-resident, in place and not, and logits
//                             split over the vocabulary, against the CPU backend
//   papo_cuda_test --host-cost [N]   a steady-state call's runtime calls and bytes (emulated build) and its host CPU
//                             work at N rows (default 8192), with an estimate of its host time beyond the kernels
//   papo_cuda_test --profile WHAT N V DTYPE   one fwd+bwd call of version WHAT (k1 to k4) or a same-bytes copy
//                             kernel (copy) after a warm-up, bracketed for ncu --profile-from-start off
//   papo_cuda_test --bench [N V] [--predictions FILE]
//                             N x V, bf16 then fp32, device-resident: fwd+bwd on both paths for every kernel
//                             (k4, k3, k2, k1, k0 naive), detachMasked, the GSPO phases, in place, and the forward
//                             alone, each against the roofline of its own minimal bytes, with the device memory
//                             the call holds, and beside it the static report's napkin prediction for this GPU
//                             model, case and shape (FILE, default bench/results/predictions.tsv, written by
//                             npm run bench -- --static --save); a JSON line per row
//
// Tolerances: fp32 within 1e-5 relative (plus a small absolute floor for values near 0),
// fp16/bf16 gradients within 1e-2.
#include <cuda_fp16.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/vocab_stats.h"
#include "core/token_weights.h"
#include "cpu/papo_cpu.h"
#include "cuda/cuda_resources.h"
#include "cuda/launch.cuh"
#include "cuda/papo_cuda.h"
#include "cuda/staging_pool.h"
#include "cuda/stream_memory.h"
#if defined(PAPO_CUDA_EMULATED)
#include <papo_emulator/emulator.h>
#endif

using namespace papo;

namespace {

int failures = 0;

uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return bf16_bits_from_f32_bits(u);
}
float from_bits(int32_t dtype, const void* p, int64_t i) {
  if (dtype == DT_F32) return static_cast<const float*>(p)[i];
  const uint16_t b = static_cast<const uint16_t*>(p)[i];
  if (dtype == DT_BF16) {
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  return (float)__half2float(__ushort_as_half(b));
}
void store(int32_t dtype, void* p, int64_t i, float v) {
  if (dtype == DT_F32) static_cast<float*>(p)[i] = v;
  else if (dtype == DT_BF16) static_cast<uint16_t*>(p)[i] = to_bf16(v);
  else static_cast<uint16_t*>(p)[i] = __half_as_ushort(__float2half_rn(v));
}
size_t esz(int32_t dtype) { return dtype_bytes(dtype); }

struct Case {
  std::string name;
  int64_t N, V;
  int32_t dtype, gradType;
  bool masked = true, inPlace = false, negInf = false, partialMask = false, maskedLogProbs = false;
  int32_t entropyMode = ENTROPY_SAMPLED;
};

struct Data {
  std::vector<char> logits, masked, grad, mgrad;
  std::vector<int32_t> tokens;
  std::vector<float> adv, mask, old, mlp, outLp, outH, outMlp, outMH;
};

Data make(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 3.f);
  Data d;
  const int64_t n = c.N * c.V;
  d.logits.resize(n * esz(c.dtype));
  d.masked.resize(c.masked ? n * esz(c.dtype) : 0);
  for (int64_t i = 0; i < n; ++i) {
    store(c.dtype, d.logits.data(), i, nd(rng));
    if (c.masked) store(c.dtype, d.masked.data(), i, nd(rng));
  }
  for (int64_t r = 0; r < c.N; ++r) {
    d.tokens.push_back((int32_t)(rng() % c.V));
    if (c.negInf && c.V > 2)
      for (int k = 0; k < 3; ++k) {
        int64_t j = rng() % c.V;
        if (j == d.tokens[r]) continue;
        store(c.dtype, d.logits.data(), r * c.V + j, -INFINITY);
        if (c.masked) store(c.dtype, d.masked.data(), r * c.V + j, -INFINITY);
      }
    d.adv.push_back(nd(rng) / 3.f);
    d.mask.push_back(c.partialMask ? (float)(rng() % 3 != 0) : 1.f);
    d.old.push_back(-1.f - (float)(rng() % 100) / 50.f);
    d.mlp.push_back(-2.f);
  }
  return d;
}

PapoCall call_of(const Case& c, Data& d) {
  PapoCall k;
  k.N = c.N;
  k.V = c.V;
  k.temperature = 0.9;
  k.logits = d.logits.data();
  k.dtype = c.dtype;
  if (c.maskedLogProbs) {
    k.maskedLogProbs = d.mlp.data();
  } else if (c.masked) {
    k.maskedLogits = d.masked.data();
    k.maskedDtype = c.dtype;
  }
  k.tokens = d.tokens.data();
  k.advantages = d.adv.data();
  k.mask = d.mask.data();
  k.oldLogProbs = d.old.data();
  LossParams& p = k.params;
  p.perceptionCoef = 0.02;
  p.entropyCoef = 0.01;
  p.maskedEntropyCoef = c.maskedLogProbs ? 0.0 : 0.02;
  p.entropyMode = c.entropyMode;
  p.detachMasked = c.maskedLogProbs;
  p.onPolicy = 0;
  p.hasMasked = 1;
  k.normScale = (double)c.N;
  d.outLp.assign(c.N, 0);
  d.outH.assign(c.N, 0);
  d.outMlp.assign(c.N, 0);
  d.outMH.assign(c.N, 0);
  k.outLogProbs = d.outLp.data();
  k.outEntropy = d.outH.data();
  k.outMaskedLogProbs = d.outMlp.data();
  k.outMaskedEntropy = d.outMH.data();
  const int64_t n = c.N * c.V;
  if (c.inPlace) {
    k.gradLogits = d.logits.data();
    k.gradType = c.dtype;
    if (c.masked && !c.maskedLogProbs) k.gradMaskedLogits = d.masked.data(), k.gradMaskedType = c.dtype;
  } else {
    d.grad.assign(n * esz(c.gradType), 0);
    k.gradLogits = d.grad.data();
    k.gradType = c.gradType;
    if (c.masked && !c.maskedLogProbs) {
      d.mgrad.assign(n * esz(c.gradType), 0);
      k.gradMaskedLogits = d.mgrad.data();
      k.gradMaskedType = c.gradType;
    }
  }
  return k;
}

void expect_close(const std::string& what, double got, double want, double rel, double abs) {
  if (fabs(got - want) <= abs + rel * fabs(want) || (isinf(got) && got == want)) return;
  if (failures++ < 20) fprintf(stderr, "  FAIL %s: got %.9g, want %.9g\n", what.c_str(), got, want);
}

void compare(const std::string& tag, const Case& c, const PapoCall& got, const PapoCall& want, const PapoMetrics& mg,
             const PapoMetrics& mw) {
  const bool f32 = c.dtype == DT_F32;
  const double rel = 1e-5, abs = 1e-6;
  expect_close(tag + " loss", mg.loss, mw.loss, rel, 1e-7);
  expect_close(tag + " perceptionKl", mg.perceptionKl, mw.perceptionKl, rel, 1e-7);
  for (int64_t i = 0; i < c.N; ++i) {
    expect_close(tag + " logProbs[" + std::to_string(i) + "]", got.outLogProbs[i], want.outLogProbs[i], rel, 1e-5);
    expect_close(tag + " entropy[" + std::to_string(i) + "]", got.outEntropy[i], want.outEntropy[i], rel, 1e-5);
  }
  const int gt = got.gradType;
  const double grel = f32 && gt == DT_F32 ? 1e-4 : 1e-2, gabs = f32 && gt == DT_F32 ? 1e-7 : 1e-5;
  for (int path = 0; path < 2; ++path) {
    const void* g = path ? got.gradMaskedLogits : got.gradLogits;
    const void* w = path ? want.gradMaskedLogits : want.gradLogits;
    if (!g) continue;
    for (int64_t i = 0; i < c.N * c.V; ++i)
      expect_close(tag + (path ? " gradMasked[" : " grad[") + std::to_string(i) + "]", from_bits(gt, g, i),
                   from_bits(gt, w, i), grel, gabs + abs);
  }
}

// Copies the call's logits (and gradient buffers) to the device and points a copy of the call at them.
struct OnDevice {
  std::vector<void*> allocs;
  void* up(const void* host, size_t bytes) {
    void* p = cuda_alloc(bytes, 0, 0);
    allocs.push_back(p);
    if (host) cuda_copy(p, host, bytes, true, 0, 0);
    else cuda_memset_zero(p, bytes, 0, 0);
    return p;
  }
  ~OnDevice() {
    for (void* p : allocs) cuda_free(p, 0, 0);
  }
};

void run_case(const Case& c) {
  // k3 (cluster) three times: clusters of 2 and of 4 blocks, so that slices meet in the middle, and few of them,
  // so that each takes several row pairs in turn (both of k3's buffers are used); and two clusters per SM
  // (blocks of 256 threads, one buffer). k4 (split rows) twice: its default slices, and slices of 16 vectors on
  // 5 blocks, so that every row has many slices (47 to 64 at V = 3001-4099 in fp32: more than the 32 lanes of the
  // row's merge) and each block many items in turn.
  struct Family {
    int kernel;
    const char* name;
    int cluster;
    bool coResident;
    int slice;
  };
  const Family families[] = {{KERNEL_K0_NAIVE, " k0 naive", 0, false, 0},
                             {KERNEL_K1_TWO_PASS, " k1 two-pass", 0, false, 0},
                             {KERNEL_K2_FUSED, " k2 fused", 0, false, 0},
                             {KERNEL_K3_CLUSTER, " k3 cluster x2", 2, false, 0},
                             {KERNEL_K3_CLUSTER, " k3 cluster x4", 4, false, 0},
                             {KERNEL_K3_CLUSTER, " k3 cluster x4, two per SM", 4, true, 0},
                             {KERNEL_K4_SPLIT, " k4 split rows", 0, false, 0},
                             {KERNEL_K4_SPLIT, " k4 split rows, slices of 16", 0, false, 16}};
  for (const Family& fam : families)
    for (int where = 0; where < 2; ++where) {
      CudaTuning tuning;
      if (fam.cluster) tuning.cluster = fam.cluster, tuning.blocks = 8;
      if (fam.coResident) tuning.k3CoResident = 2;
      if (fam.slice) tuning.k4Slice = fam.slice, tuning.blocks = 5;
      if (where == 0) tuning.stagingBytes = 1 << 20;  // several chunks through both slots
      const std::string tag = c.name + fam.name + (where ? " device" : " staged");
      Data dw = make(c, 7), dg = make(c, 7);
      PapoCall want = call_of(c, dw), got = call_of(c, dg);
      const PapoMetrics mw = papo_loss_cpu(want);
      CudaExec ex;
      ex.kernel = fam.kernel;
      ex.tuning = &tuning;
      PapoMetrics mg;
      try {
        if (where == 0) {
          mg = papo_loss_cuda(got, ex);
        } else {
          OnDevice dev;
          const size_t in = c.N * c.V * esz(c.dtype), gb = c.N * c.V * esz(got.gradType);
          PapoCall dc = got;
          dc.logits = dev.up(got.logits, in);
          if (got.maskedLogits) dc.maskedLogits = dev.up(got.maskedLogits, in);
          dc.gradLogits = c.inPlace ? const_cast<void*>(dc.logits) : dev.up(nullptr, gb);
          if (got.gradMaskedLogits) dc.gradMaskedLogits = c.inPlace ? const_cast<void*>(dc.maskedLogits) : dev.up(nullptr, gb);
          ex.onDevice = true;
          mg = papo_loss_cuda(dc, ex);
          cuda_copy(got.gradLogits, dc.gradLogits, gb, false, 0, 0);
          if (got.gradMaskedLogits) cuda_copy(got.gradMaskedLogits, dc.gradMaskedLogits, gb, false, 0, 0);
        }
      } catch (const Error& e) {
        fprintf(stderr, "  FAIL %s: %s\n", tag.c_str(), e.what());
        ++failures;
        continue;
      }
      const int before = failures;
      compare(tag, c, got, want, mg, mw);
      printf("%s %s\n", failures == before ? "ok  " : "FAIL", tag.c_str());
    }
}

// Device data written by the caller's asynchronous work: the call must be ordered after it on the tensors'
// streams, whether that is the legacy default stream (0), a non-blocking stream of the caller's, or, for the
// masked logits, a second stream. The copies are not waited for; a call that ran early would read zeros.
void stream_ordering() {
  const Case c{"f32 ordered", 6, 3001, DT_F32, DT_F32};
  const char* modes[] = {"legacy stream", "caller's stream", "masked logits on a second stream"};
  for (int mode = 0; mode < 3; ++mode) {
    Data dw = make(c, 11), dg = make(c, 11);
    PapoCall want = call_of(c, dw), got = call_of(c, dg);
    const PapoMetrics mw = papo_loss_cpu(want);
    cudaStream_t s1 = nullptr, s2 = nullptr;
    if (mode >= 1) cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking);
    if (mode == 2) cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking);
    const std::string tag = std::string("ordered after the producer on the ") + modes[mode];
    try {
      OnDevice dev;
      const size_t bytes = c.N * c.V * esz(c.dtype);
      PapoCall dc = got;
      dc.logits = dev.up(nullptr, bytes);
      dc.maskedLogits = dev.up(nullptr, bytes);
      dc.gradLogits = dev.up(nullptr, bytes);
      dc.gradMaskedLogits = dev.up(nullptr, bytes);
      cuda_check(cudaMemcpyAsync(const_cast<void*>(dc.logits), got.logits, bytes, cudaMemcpyHostToDevice, s1), "copy");
      cuda_check(cudaMemcpyAsync(const_cast<void*>(dc.maskedLogits), got.maskedLogits, bytes, cudaMemcpyHostToDevice,
                                 mode == 2 ? s2 : s1), "copy");
      CudaExec ex;
      ex.onDevice = true;
      ex.stream = (uint64_t)(uintptr_t)s1;
      ex.hasMaskedStream = mode == 2;
      ex.maskedStream = (uint64_t)(uintptr_t)s2;
      const PapoMetrics mg = papo_loss_cuda(dc, ex);
      cuda_copy(got.gradLogits, dc.gradLogits, bytes, false, 0, (uint64_t)(uintptr_t)s1);
      cuda_copy(got.gradMaskedLogits, dc.gradMaskedLogits, bytes, false, 0, (uint64_t)(uintptr_t)(mode == 2 ? s2 : s1));
      const int before = failures;
      compare(tag, c, got, want, mg, mw);
      printf("%s %s\n", failures == before ? "ok  " : "FAIL", tag.c_str());
    } catch (const Error& e) {
      fprintf(stderr, "  FAIL %s: %s\n", tag.c_str(), e.what());
      ++failures;
    }
    if (s1) cudaStreamDestroy(s1);
    if (s2) cudaStreamDestroy(s2);
  }
}

// Columns [start, start + W) of every row of an [N, V] tensor.
std::vector<char> columns(const std::vector<char>& src, int32_t dtype, int64_t N, int64_t V, int64_t start, int64_t W) {
  const size_t e = esz(dtype);
  std::vector<char> out(N * W * e);
  for (int64_t i = 0; i < N; ++i) memcpy(out.data() + i * W * e, src.data() + (i * V + start) * e, W * e);
  return out;
}

// mergeVocabShardStats (lib/vocab-stats.ts): consecutive shards' statistics merged in shard order.
std::vector<double> merge_stats(const std::vector<std::vector<double>>& list, int64_t N) {
  std::vector<double> out(VS_FIELDS * N);
  for (int64_t i = 0; i < N; ++i) {
    double m = -INFINITY, S = 0, U = 0, t = 0;
    for (const auto& s : list) m = std::max(m, s[VS_MAX * N + i]);
    for (const auto& s : list) {
      t += s[VS_TARGET * N + i];
      if (s[VS_MAX * N + i] == -INFINITY) continue;
      const double f = exp(s[VS_MAX * N + i] - m);
      S += s[VS_SUM_EXP * N + i] * f;
      U += s[VS_SUM_EXP_X * N + i] * f;
    }
    out[VS_MAX * N + i] = m, out[VS_SUM_EXP * N + i] = S, out[VS_SUM_EXP_X * N + i] = U, out[VS_TARGET * N + i] = t;
  }
  return out;
}

// Logits split over the vocabulary: each shard's statistics (vocab_shard_stats_cuda), merged here, then each
// shard's call from them, staged and device-resident, against the CPU's unsplit call: kernels/vocab_shard.cu under
// the sanitizers too.
void vocab_split() {
  for (const int32_t dtype : {DT_F32, DT_BF16})
    for (int where = 0; where < 2; ++where) {
      const Case c{dtype == DT_F32 ? "f32 split" : "bf16 split", 7, 3001, dtype, dtype, true, false, true, true};
      const int64_t widths[] = {1000, 999, 1002}, K = 3, N = c.N;
      const std::string tag = c.name + std::string(where ? " device" : " staged");
      Data dw = make(c, 5);
      PapoCall want = call_of(c, dw);
      const PapoMetrics mw = papo_loss_cpu(want);
      const int before = failures;
      try {
        OnDevice dev;
        CudaExec ex;
        ex.onDevice = where == 1;
        std::vector<std::vector<char>> z(K), zm(K);
        std::vector<const void*> zp(K), zmp(K);
        std::vector<std::vector<double>> stats[2];
        for (int64_t k = 0, start = 0; k < K; start += widths[k++]) {
          z[k] = columns(dw.logits, dtype, N, c.V, start, widths[k]);
          zm[k] = columns(dw.masked, dtype, N, c.V, start, widths[k]);
          zp[k] = ex.onDevice ? dev.up(z[k].data(), z[k].size()) : z[k].data();
          zmp[k] = ex.onDevice ? dev.up(zm[k].data(), zm[k].size()) : zm[k].data();
          for (int path = 0; path < 2; ++path) {
            VocabStatsCall sc;
            sc.N = N, sc.V = widths[k], sc.temperature = want.temperature, sc.dtype = dtype, sc.tokens = dw.tokens.data();
            sc.logits = path ? zmp[k] : zp[k];
            sc.vocabStart = start;
            stats[path].emplace_back(VS_FIELDS * N);
            sc.out = stats[path].back().data();
            vocab_shard_stats_cuda(sc, ex);
          }
        }
        const std::vector<double> merged = merge_stats(stats[0], N), mmerged = merge_stats(stats[1], N);
        for (int64_t k = 0, start = 0; k < K; start += widths[k++]) {
          const size_t gb = N * widths[k] * esz(dtype);
          std::vector<char> g(gb), gm(gb);
          std::vector<float> lp(N), h(N), mlp(N), mh(N);
          PapoCall sc = want;
          sc.V = widths[k], sc.logits = zp[k], sc.maskedLogits = zmp[k];
          sc.gradLogits = ex.onDevice ? dev.up(nullptr, gb) : g.data();
          sc.gradMaskedLogits = ex.onDevice ? dev.up(nullptr, gb) : gm.data();
          sc.outLogProbs = lp.data(), sc.outEntropy = h.data(), sc.outMaskedLogProbs = mlp.data(), sc.outMaskedEntropy = mh.data();
          sc.vocabStats = merged.data(), sc.maskedVocabStats = mmerged.data(), sc.vocabStart = start, sc.vocabTotal = c.V;
          const PapoMetrics mg = papo_loss_cuda(sc, ex);
          if (ex.onDevice) cuda_copy(g.data(), sc.gradLogits, gb, false, 0, 0), cuda_copy(gm.data(), sc.gradMaskedLogits, gb, false, 0, 0);
          const std::string kt = tag + " shard " + std::to_string(k);
          expect_close(kt + " loss", mg.loss, mw.loss, 1e-5, 1e-7);
          for (int64_t i = 0; i < N; ++i) {
            expect_close(kt + " logProbs", lp[i], want.outLogProbs[i], 1e-5, 1e-5);
            expect_close(kt + " maskedEntropy", mh[i], want.outMaskedEntropy[i], 1e-5, 1e-5);
          }
          const double grel = dtype == DT_F32 ? 1e-4 : 1e-2, gabs = dtype == DT_F32 ? 1.1e-6 : 1.1e-5;
          for (int64_t i = 0; i < N; ++i)
            for (int64_t j = 0; j < widths[k]; ++j) {
              const int64_t w = i * c.V + start + j, o = i * widths[k] + j;
              expect_close(kt + " grad", from_bits(dtype, g.data(), o), from_bits(dtype, want.gradLogits, w), grel, gabs);
              expect_close(kt + " gradMasked", from_bits(dtype, gm.data(), o), from_bits(dtype, want.gradMaskedLogits, w), grel, gabs);
            }
        }
      } catch (const Error& e) {
        fprintf(stderr, "  FAIL %s: %s\n", tag.c_str(), e.what());
        ++failures;
      }
      printf("%s %s\n", failures == before ? "ok  " : "FAIL", tag.c_str());
    }
}

int parity() {
  std::vector<Case> cases = {
      {"f32 masked", 9, 1000, DT_F32, DT_F32},
      {"f32 V=1", 3, 1, DT_F32, DT_F32},
      {"f32 odd V, -inf, partial mask", 11, 4099, DT_F32, DT_F32, true, false, true, true},
      {"f32 in place", 6, 3001, DT_F32, DT_F32, true, true},
      {"f32 full entropy", 5, 2048, DT_F32, DT_F32, true, false, false, false, false, ENTROPY_FULL},
      {"f32 maskedLogProbs", 7, 777, DT_F32, DT_F32, true, false, false, false, true},
      {"bf16 -> bf16", 9, 4097, DT_BF16, DT_BF16, true, false, true, true},
      {"bf16 -> f32", 9, 1023, DT_BF16, DT_F32},
      {"bf16 in place", 5, 5003, DT_BF16, DT_BF16, true, true, true},
      {"f16 -> f16", 7, 2049, DT_F16, DT_F16, true, false, true},
      {"f16 -> f32 full entropy", 4, 999, DT_F16, DT_F32, true, false, false, false, false, ENTROPY_FULL},
  };
  for (const Case& c : cases) run_case(c);
  // A NaN row in place is rejected before any logit is overwritten.
  {
    Case c{"bf16 in place NaN", 4, 1000, DT_BF16, DT_BF16, true, true};
    Data d = make(c, 3);
    store(c.dtype, d.masked.data(), 2 * c.V + 5, NAN);
    const std::vector<char> before = d.logits;
    PapoCall k = call_of(c, d);
    bool threw = false;
    try {
      papo_loss_cuda(k, CudaExec{});
    } catch (const Error& e) {
      threw = e.code == ErrorCode::InvalidArgument && std::string(e.what()).find("maskedLogits contains NaN in row 2") != std::string::npos;
    }
    const bool intact = d.logits == before;
    printf("%s in place NaN rejected, logits intact\n", threw && intact ? "ok  " : "FAIL");
    failures += !(threw && intact);
  }
  stream_ordering();
  vocab_split();
  printf("%s\n", failures ? "FAILED" : "all CUDA parity checks passed");
  return failures ? 1 : 0;
}

// ---- benchmark ---------------------------------------------------------------------------------------------

// One row of the static report's predictions (bench/static-report.ts, predictionTable): the model's time for a GPU
// model, case, version (k1, k2, ...), dtype and shape.
struct Prediction {
  std::string gpu, kase, version, dtype;
  long long N = 0, V = 0;
  double ms = 0, ratio = 0;
  std::string bound;
};

struct Predictions {
  std::string source;  // the file's first line: where and at which commit the model ran
  std::vector<Prediction> rows;

  // The rows for the GPU model whose name (its first word: H100, H200) is in the device's name.
  static Predictions load(const std::string& file, const char* device) {
    Predictions p;
    std::ifstream in(file);
    if (!in) {
      p.source = "no predictions (" + file + " not found: npm run bench -- --static --save writes it)";
      return p;
    }
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      if (line[0] == '#') {
        if (p.source.empty()) p.source = line.substr(line.find_first_not_of("# "));
        continue;
      }
      std::vector<std::string> f;
      std::stringstream ss(line);
      for (std::string x; std::getline(ss, x, '\t');) f.push_back(x);
      if (f.size() != 9 || f[0] == "gpu") continue;
      const std::string model = f[0].substr(0, f[0].find(' '));
      if (!strstr(device, model.c_str())) continue;
      Prediction r;
      r.gpu = f[0], r.kase = f[1], r.version = f[2], r.dtype = f[3];
      r.N = atoll(f[4].c_str()), r.V = atoll(f[5].c_str());
      r.ms = atof(f[6].c_str()), r.ratio = atof(f[7].c_str());
      r.bound = f[8];
      p.rows.push_back(r);
    }
    return p;
  }

  // kernel: the row's label, whose first word is the version ("k2 fused").
  const Prediction* find(const char* kase, const char* kernel, const char* dtype, long long N, long long V) const {
    const std::string version = std::string(kernel).substr(0, std::string(kernel).find(' '));
    for (const Prediction& r : rows)
      if (r.kase == kase && r.version == version && r.dtype == dtype && r.N == N && r.V == V) return &r;
    return nullptr;
  }
};

__global__ void read_only(const uint4* p, int64_t n, unsigned* sink) {
  unsigned acc = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;  // keeps the loads alive
}

// The median of `reps` timings after one warm-up, each between two events on the legacy stream (where the calls
// of device data with no stream of their own run), the device idle before each.
template <class F>
double median_ms(F&& f, int reps) {
  f();  // warm-up
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    cudaDeviceSynchronize();
    cudaEventRecord(a, 0);
    f();
    cudaEventRecord(b, 0);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Device memory a call holds beyond its inputs and outputs: the most its device scratch (stream-ordered, from an
// emptied pool) reached. cuda-naive's scratch is rows x V x 8 bytes per path (4 GiB at most).
struct MemProbe {
  size_t base = stream_pool_peak(true);  // what the pool holds for the inputs and outputs already
  double mib() const { return (double)(stream_pool_peak(false) - base) / (1 << 20); }
};

// Every case the GPU benchmark reports, on one device in one run, each against the roofline of its own minimal
// bytes: a device-to-device copy of the same bytes for fwd+bwd (read + write), a read-only pass for the forward,
// and for the detached case (both logits read, one gradient written) half a copy plus half a read-only pass of
// the two paths. One "JSON {...}" line per row for bench/results/gpu.jsonl.
// The benchmark's device-resident call: both paths' logits (random, normal with sigma 3: never zeros, which can
// run faster than real data), their gradients, and the per-token arrays of N rows.
struct BenchCall {
  OnDevice dev;
  void *z, *zm, *g, *gm;
  std::vector<int32_t> tokens;
  std::vector<float> adv, lp, H, mlp, mH;
  std::vector<int32_t> seqs;
  PapoCall base;

  BenchCall(int64_t N, int64_t V, int32_t dtype) : tokens(N), adv(N, 0.5f), lp(N), H(N), mlp(N), mH(N) {
    const size_t n = (size_t)N * V, bytes = n * esz(dtype);
    std::vector<char> host(bytes);
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.f, 3.f);
    const size_t fresh = std::min<size_t>(n, 1 << 24);
    for (size_t i = 0; i < fresh; ++i) store(dtype, host.data(), (int64_t)i, nd(rng));
    for (size_t i = fresh; i < n; ++i) memcpy(host.data() + i * esz(dtype), host.data() + (i % fresh) * esz(dtype), esz(dtype));
    z = dev.up(host.data(), bytes);
    zm = dev.up(host.data(), bytes);
    g = dev.up(nullptr, bytes);
    gm = dev.up(nullptr, bytes);
    for (int64_t i = 0; i < N; ++i) tokens[i] = (int32_t)(rng() % V);
    // GSPO's sequences: 16 of N/16 tokens (the remainder in the last).
    seqs.assign(16, (int32_t)(N / 16));
    seqs.back() += (int32_t)(N - 16 * (N / 16));
    base.N = N, base.V = V, base.logits = z, base.dtype = dtype, base.maskedLogits = zm, base.maskedDtype = dtype;
    base.tokens = tokens.data(), base.advantages = adv.data();
    base.params.perceptionCoef = 0.02, base.params.entropyCoef = 0.01, base.params.maskedEntropyCoef = 0.02;
    base.params.onPolicy = 1, base.params.hasMasked = 1, base.normScale = (double)N;
    base.gradLogits = g, base.gradType = dtype, base.gradMaskedLogits = gm, base.gradMaskedType = dtype;
    base.outLogProbs = lp.data(), base.outEntropy = H.data(), base.outMaskedLogProbs = mlp.data(),
    base.outMaskedEntropy = mH.data();
  }
};

void bench_dtype(const cudaDeviceProp& prop, int64_t N, int64_t V, int32_t dtype, const Predictions& predicted) {
  const size_t n = (size_t)N * V, bytes = n * esz(dtype);
  const char* dname = dtype == DT_F32 ? "float32" : "bfloat16";
  printf("# %s, N=%lld V=%lld %s, device-resident, gradients %s\n", prop.name, (long long)N, (long long)V, dname, dname);
  BenchCall bc(N, V, dtype);
  OnDevice& dev = bc.dev;
  void *z = bc.z, *zm = bc.zm, *g = bc.g, *gm = bc.gm;
  std::vector<int32_t>& tokens = bc.tokens;
  std::vector<float>& lp = bc.lp;
  std::vector<float>& H = bc.H;
  std::vector<int32_t>& seqs = bc.seqs;
  const PapoCall& base = bc.base;
  CudaExec ex;
  ex.onDevice = true;

  const int reps = 20;
  const double copyMs = median_ms([&] {
    cudaMemcpyAsync(g, z, bytes, cudaMemcpyDeviceToDevice, 0);
    cudaMemcpyAsync(gm, zm, bytes, cudaMemcpyDeviceToDevice, 0);
  }, reps);
  unsigned* sink = static_cast<unsigned*>(dev.up(nullptr, 4));
  const double readMs = median_ms([&] {
    for (const void* p : {z, zm})
      cuda::launch_kernel("read_only", read_only, dim3(prop.multiProcessorCount * 8), dim3(512), 0, nullptr,
                          static_cast<const uint4*>(p), (int64_t)(bytes / 16), sink);
  }, reps);
  auto row = [&](const char* kase, const char* kernel, double ms, double moved, double roofMs, const char* roof,
                 double extraMiB) {
    const Prediction* p = predicted.find(kase, kernel, dname, (long long)N, (long long)V);
    char pred[96] = "  no prediction";
    if (p) snprintf(pred, sizeof pred, "  predicted %.3f ms (%s, %s)", p->ms, p->bound.c_str(), p->gpu.c_str());
    printf("%-22s %-16s %9.3f ms %8.1f GB/s %6.2fx %-16s %5.0f%% of its rate  +%.1f MiB%s\n", kase, kernel, ms,
           moved / ms / 1e6, ms / roofMs, roof, 100.0 * roofMs / ms, extraMiB, pred);
    printf("JSON {\"gpu\":\"%s\",\"case\":\"%s\",\"kernel\":\"%s\",\"dtype\":\"%s\",\"N\":%lld,\"V\":%lld,\"medianMs\":%.4f,"
           "\"gbPerS\":%.2f,\"vsRoofline\":%.4f,\"roofline\":\"%s\",\"rooflineMs\":%.4f,\"extraDeviceMiB\":%.2f",
           prop.name, kase, kernel, dname, (long long)N, (long long)V, ms, moved / ms / 1e6, ms / roofMs, roof, roofMs,
           extraMiB);
    if (p)
      printf(",\"predictedMs\":%.4f,\"predictedBound\":\"%s\",\"predictedGpu\":\"%s\"", p->ms, p->bound.c_str(), p->gpu.c_str());
    printf("}\n");
  };
  const double rw = 4.0 * bytes, r = 2.0 * bytes;
  row("d2d copy", "cudaMemcpy", copyMs, rw, copyMs, "itself", 0);
  row("read-only pass", "read_only", readMs, r, readMs, "itself", 0);

  struct Kernel {
    int32_t id;
    const char* name;
  };
  const Kernel k1{KERNEL_K1_TWO_PASS, "k1 two-pass"}, k2{KERNEL_K2_FUSED, "k2 fused"};
  const Kernel kernels[] = {{KERNEL_K4_SPLIT, "k4 split rows"}, {KERNEL_K3_CLUSTER, "k3 cluster"}, k2, k1,
                            {KERNEL_K0_NAIVE, "k0 naive"}};
  // A case: the call's settings, then its roofline.
  auto time_call = [&](const char* kase, const Kernel& kern, const PapoCall& call, double moved, double roofMs,
                       const char* roof) {
    ex.kernel = kern.id;
    MemProbe mem;
    papo_loss_cuda(call, ex);  // first call: the pool's buffers
    const double extra = mem.mib();
    const double ms = median_ms([&] { papo_loss_cuda(call, ex); }, kern.id == KERNEL_K0_NAIVE ? 5 : reps);
    row(kase, kern.name, ms, moved, roofMs, roof, extra);
    return ms;
  };
  double fusedMs = 0, naiveMs = 0;
  for (const Kernel& kern : kernels) {
    const double ms = time_call("fwd+bwd both paths", kern, base, rw, copyMs, "d2d copy");
    if (kern.id == KERNEL_K2_FUSED) fusedMs = ms;
    if (kern.id == KERNEL_K0_NAIVE) naiveMs = ms;
  }
  printf("k2 fused vs cuda-naive: %.1fx faster\n", naiveMs / fusedMs);

  PapoCall detached = base;  // the released code's default: the masked path forward only
  detached.params.detachMasked = 1;
  detached.gradMaskedLogits = nullptr;
  const double detachedRoofMs = copyMs / 2 + readMs / 2;
  for (const Kernel& kern : kernels)
    if (kern.id != KERNEL_K0_NAIVE) time_call("fwd+bwd detachMasked", kern, detached, 3.0 * bytes, detachedRoofMs, "copy+read");

  PapoCall gspo = base;  // a sequence-level term: statistics, the host's sequence step, then the gradients
  gspo.params.lossType = LOSS_GSPO;
  gspo.seqLengths = seqs.data(), gspo.numSeqs = (int64_t)seqs.size();
  // The plan runs the flows whose phases are apart as k1 (native/cuda/plan.cu), whichever fast version is asked.
  time_call("fwd+bwd gspo (phases)", k1, gspo, rw, copyMs, "d2d copy");

  PapoCall inPlace = base;  // every row checked by a forward phase before the first gradient overwrites a logit
  inPlace.gradLogits = z, inPlace.gradMaskedLogits = zm;
  time_call("fwd+bwd in place", k1, inPlace, rw, copyMs, "d2d copy");

  LogProbsCall lc;
  lc.N = N, lc.V = V, lc.logits = z, lc.dtype = dtype, lc.tokens = tokens.data(), lc.outLogProbs = lp.data(), lc.outEntropy = H.data();
  ex.kernel = KERNEL_K2_FUSED;
  MemProbe mem;
  log_probs_cuda(lc, ex);
  const double extra = mem.mib();
  const double fwdMs = median_ms([&] { log_probs_cuda(lc, ex); }, reps);
  row("forward only (1 path)", "k1 two-pass", fwdMs, bytes, readMs / 2, "read-only pass", extra);
}

int bench(int64_t N, int64_t V, const std::string& predictionFile) {
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  printf("# %s (sm_%d%d, %d SMs, %.0f MB L2), driver %d, runtime %d\n", prop.name, prop.major, prop.minor,
         prop.multiProcessorCount, prop.l2CacheSize / 1e6, driver, runtime);
  const Predictions predicted = Predictions::load(predictionFile, prop.name);
  printf("# predictions: %s\n", predicted.source.c_str());
  for (int32_t dtype : {DT_BF16, DT_F32}) bench_dtype(prop, N, V, dtype, predicted);
  return 0;
}

// ---- one call for a profiler ------------------------------------------------------------------------------

// A same-bytes copy as a kernel (ncu profiles kernels, not cudaMemcpy): the roofline beside the kernels' counters.
__global__ void copy_kernel(const uint4* src, uint4* dst, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = src[i];
}

// One fwd+bwd call on both paths (what: k1 to k4, as PAPO_CUDA_KERNEL numbers them) or a same-bytes copy
// (what: copy), after a warm-up one, between cudaProfilerStart and cudaProfilerStop: `ncu --profile-from-start off`
// measures that call's kernels alone.
int profile(const std::string& what, int64_t N, int64_t V, const std::string& dtypeName) {
  const int32_t dtype = dtypeName == "float32" ? DT_F32 : DT_BF16;
  if (dtypeName != "float32" && dtypeName != "bfloat16") {
    fprintf(stderr, "--profile: dtype must be float32 or bfloat16, got %s\n", dtypeName.c_str());
    return 2;
  }
  const bool copy = what == "copy";
  const int32_t kernel = copy ? 0 : what.size() == 2 && what[0] == 'k' ? what[1] - '0' : -1;
  if (!copy && (kernel < KERNEL_K1_TWO_PASS || kernel > KERNEL_K4_SPLIT)) {
    fprintf(stderr, "--profile: expected k1 to k4 or copy, got %s\n", what.c_str());
    return 2;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  BenchCall bc(N, V, dtype);
  const int64_t n16 = N * V * (int64_t)esz(dtype) / 16;
  CudaExec ex;
  ex.onDevice = true;
  ex.kernel = kernel;
  auto once = [&] {
    if (!copy) return (void)papo_loss_cuda(bc.base, ex);
    for (auto [src, dst] : {std::pair<void*, void*>{bc.z, bc.g}, {bc.zm, bc.gm}})
      cuda::launch_kernel("copy_kernel", copy_kernel, dim3(prop.multiProcessorCount * 8), dim3(512), 0, nullptr,
                          static_cast<const uint4*>(src), static_cast<uint4*>(dst), n16);
  };
  once();
  cuda_check(cudaDeviceSynchronize(), "the warm-up call");
  cudaProfilerStart();
  once();
  cuda_check(cudaDeviceSynchronize(), "the profiled call");
  cudaProfilerStop();
  printf("profiled one %s call: N=%lld V=%lld %s on %s\n", what.c_str(), (long long)N, (long long)V, dtypeName.c_str(),
         prop.name);
  return 0;
}

// ---- host cost ---------------------------------------------------------------------------------------------

// The host's share of a steady-state call (device data, caller's gradients, second call): what it asks the
// runtime and copies, as the emulated device counts it, and the O(N) work it does on the CPU (the token weights,
// packing the per-token inputs into pinned memory, unpacking the outputs), timed here. On the emulated device the
// call's own time means nothing; the estimate beside the counts says which costs it assumes per runtime call and
// per byte (no GPU measured them).
int host_cost(int64_t N) {
  Case c{"host cost", N, 64, DT_BF16, DT_BF16};
  Data d = make(c, 5);
  PapoCall call = call_of(c, d);
  OnDevice dev;
  const size_t bytes = c.N * c.V * esz(c.dtype);
  PapoCall dc = call;
  dc.logits = dev.up(call.logits, bytes);
  dc.maskedLogits = dev.up(call.maskedLogits, bytes);
  dc.gradLogits = dev.up(nullptr, bytes);
  dc.gradMaskedLogits = dev.up(nullptr, bytes);
  CudaExec ex;
  ex.onDevice = true;
  papo_loss_cuda(dc, ex);  // the plan, the pools
#if defined(PAPO_CUDA_EMULATED)
  const papo_emu::Stats a = papo_emu::stats();
  papo_loss_cuda(dc, ex);
  const papo_emu::Stats b = papo_emu::stats();
  const int64_t calls = b.apiCalls - a.apiCalls, up = b.bytesToDevice - a.bytesToDevice, down = b.bytesToHost - a.bytesToHost;
  const int64_t copies = (b.copiesToDevice - a.copiesToDevice) + (b.copiesToHost - a.copiesToHost);
  int64_t launches = 0, syncs = 0, light = 0;  // light: cudaGetDevice, cudaGetLastError
  for (const auto& kv : b.apiCallsByName) {
    int64_t before = 0;
    for (const auto& kw : a.apiCallsByName)
      if (kw.first == kv.first) before = kw.second;
    const int64_t n = kv.second - before;
    if (kv.first.rfind("cudaLaunchKernel", 0) == 0) launches += n;
    else if (kv.first == "cudaStreamSynchronize") syncs += n;
    else if (kv.first == "cudaGetDevice" || kv.first == "cudaGetLastError") light += n;
  }
  printf("# a steady-state call, N=%lld: %lld runtime calls (%lld launches, %lld copies, %lld stream waits, %lld light "
         "queries), %lld bytes up, %lld bytes down\n", (long long)N, (long long)calls, (long long)launches,
         (long long)copies, (long long)syncs, (long long)light, (long long)up, (long long)down);
#else
  const int64_t calls = 0, up = 0, down = 0, copies = 0, launches = 0, syncs = 0, light = 0;
  printf("# runtime calls and bytes: counted by the emulated build only\n");
#endif
  // The CPU work, median of 21: weights, then the pack and unpack memcpys of the bytes counted above.
  auto median_us = [](auto&& f) {
    std::vector<double> t;
    for (int i = 0; i < 21; ++i) {
      const auto s0 = std::chrono::steady_clock::now();
      f();
      t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - s0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  const double weightsUs = median_us([&] { (void)token_weights(call); });
  std::vector<char> src((size_t)std::max<int64_t>(up + down, 1)), dst(src.size());
  const double packUs = median_us([&] { memcpy(dst.data(), src.data(), src.size()); });
  // Assumed, not measured: a launch, an asynchronous copy or a stream-ordered allocation or free costs the host
  // 2 us; a stream wait returns 5 us after the work is done; cudaGetDevice and cudaGetLastError cost 0.1 us; a copy
  // moves its bytes at 25 GB/s (pinned memory over PCIe 5 x16, well below its peak for copies this small).
  const double otherCalls = (double)(calls - launches - syncs - light);
  const double apiUs = 2.0 * (launches + otherCalls) + 5.0 * syncs + 0.1 * light;
  const double copyUs = (double)(up + down) / 25e3;
  printf("# measured on this CPU: token weights %.1f us, packing and unpacking %.1f us\n", weightsUs, packUs);
  printf("# estimated host time beyond the kernels: %.1f us (runtime calls %.1f + copies %.1f + CPU work %.1f; "
         "%lld copies); assumptions in test/native/papo_cuda_test.cu host_cost()\n",
         apiUs + copyUs + weightsUs + packUs, apiUs, copyUs, weightsUs + packUs, (long long)copies);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    printf("SKIP: no CUDA device (%s)\n", err != cudaSuccess ? cudaGetErrorName(err) : "none found");
    return 77;
  }
  if (argc > 1 && std::string(argv[1]) == "--host-cost") return host_cost(argc > 2 ? atoll(argv[2]) : 8192);
  if (argc == 6 && std::string(argv[1]) == "--profile") return profile(argv[2], atoll(argv[3]), atoll(argv[4]), argv[5]);
  if (argc > 1 && std::string(argv[1]) == "--bench") {
    std::vector<std::string> rest(argv + 2, argv + argc);
    std::string predictions = "bench/results/predictions.tsv";
    for (size_t i = 0; i + 1 < rest.size(); ++i)
      if (rest[i] == "--predictions") {
        predictions = rest[i + 1];
        rest.erase(rest.begin() + i, rest.begin() + i + 2);
        break;
      }
    return bench(rest.size() > 0 ? atoll(rest[0].c_str()) : 8192, rest.size() > 1 ? atoll(rest[1].c_str()) : 151936, predictions);
  }
  return parity();
}
