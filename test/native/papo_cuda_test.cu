// The CUDA kernels checked and timed without Node (ctest runs it; exit 77 = skipped, no device).
//
//   papo_cuda_test            parity: every kernel family (naive, two-pass, fused, cluster, split rows),
//                             host-staged (in several chunks) and device-resident, in place and not, against the
//                             CPU backend
//   papo_cuda_test --bench [N V]   N x V, bf16 then fp32, device-resident: fwd+bwd on both paths for every kernel
//                             (k4, k3, k2, k1, k0 naive), detachMasked, the GSPO phases, in place, and the forward
//                             alone, each against the roofline of its own minimal bytes, with the device memory
//                             the call holds; a JSON line per row
//
// Tolerances: fp32 within 1e-5 relative (plus a small absolute floor for values near 0),
// fp16/bf16 gradients within 1e-2.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "cpu/papo_cpu.h"
#include "cuda/cuda_resources.h"
#include "cuda/launch.cuh"
#include "cuda/papo_cuda.h"
#include "cuda/staging_pool.h"
#include "cuda/stream_memory.h"

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
  // k3 (cluster) twice: clusters of 2 and of 4 blocks (PAPO_CUDA_CLUSTER), so that slices meet in the middle.
  // k4 (split rows) twice: its default slices, and slices of 16 vectors (PAPO_CUDA_K4_SLICE) on 5 blocks, so
  // that every row has many slices (47 to 64 at V = 3001-4099 in fp32: more than the 32 lanes of the row's
  // merge) and each block many items in turn.
  struct Family {
    int kernel;
    const char* name;
    const char* cluster;
    const char* slice;
  };
  const Family families[] = {{KERNEL_K0_NAIVE, " k0 naive", nullptr, nullptr},
                             {KERNEL_K1_TWO_PASS, " k1 two-pass", nullptr, nullptr},
                             {KERNEL_K2_FUSED, " k2 fused", nullptr, nullptr},
                             {KERNEL_K3_CLUSTER, " k3 cluster x2", "2", nullptr},
                             {KERNEL_K3_CLUSTER, " k3 cluster x4", "4", nullptr},
                             {KERNEL_K4_SPLIT, " k4 split rows", nullptr, nullptr},
                             {KERNEL_K4_SPLIT, " k4 split rows, slices of 16", nullptr, "16"}};
  for (const Family& fam : families)
    for (int where = 0; where < 2; ++where) {
      const int kernel = fam.kernel;
      // Clusters: few of them, so each takes several row pairs in turn (both of k3's buffers are used).
      unsetenv("PAPO_CUDA_CLUSTER"), unsetenv("PAPO_CUDA_K4_SLICE"), unsetenv("PAPO_CUDA_BLOCKS");
      if (fam.cluster) setenv("PAPO_CUDA_CLUSTER", fam.cluster, 1), setenv("PAPO_CUDA_BLOCKS", "8", 1);
      if (fam.slice) setenv("PAPO_CUDA_K4_SLICE", fam.slice, 1), setenv("PAPO_CUDA_BLOCKS", "5", 1);
      const std::string tag = c.name + fam.name + (where ? " device" : " staged");
      Data dw = make(c, 7), dg = make(c, 7);
      PapoCall want = call_of(c, dw), got = call_of(c, dg);
      const PapoMetrics mw = papo_loss_cpu(want);
      CudaExec ex;
      ex.kernel = kernel;
      PapoMetrics mg;
      try {
        if (where == 0) {
          setenv("PAPO_CUDA_STAGING_MB", "1", 1);  // several chunks through both slots
          mg = papo_loss_cuda(got, ex);
          unsetenv("PAPO_CUDA_STAGING_MB");
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
  unsetenv("PAPO_CUDA_CLUSTER");
  unsetenv("PAPO_CUDA_K4_SLICE");
  unsetenv("PAPO_CUDA_BLOCKS");
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
  printf("%s\n", failures ? "FAILED" : "all CUDA parity checks passed");
  return failures ? 1 : 0;
}

// ---- benchmark ---------------------------------------------------------------------------------------------

__global__ void read_only(const uint4* p, int64_t n, unsigned* sink) {
  unsigned acc = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;  // keeps the loads alive
}

template <class F>
double median_ms(F&& f, int reps) {
  f();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    cudaDeviceSynchronize();
    const auto a = std::chrono::steady_clock::now();
    f();
    cudaDeviceSynchronize();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
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
void bench_dtype(const cudaDeviceProp& prop, int64_t N, int64_t V, int32_t dtype) {
  const size_t n = (size_t)N * V, bytes = n * esz(dtype);
  const char* dname = dtype == DT_F32 ? "float32" : "bfloat16";
  printf("# %s, N=%lld V=%lld %s, device-resident, gradients %s\n", prop.name, (long long)N, (long long)V, dname, dname);
  std::vector<char> host(bytes);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 3.f);
  const size_t fresh = std::min<size_t>(n, 1 << 24);
  for (size_t i = 0; i < fresh; ++i) store(dtype, host.data(), (int64_t)i, nd(rng));
  for (size_t i = fresh; i < n; ++i) memcpy(host.data() + i * esz(dtype), host.data() + (i % fresh) * esz(dtype), esz(dtype));
  OnDevice dev;
  void* z = dev.up(host.data(), bytes);
  void* zm = dev.up(host.data(), bytes);
  void* g = dev.up(nullptr, bytes);
  void* gm = dev.up(nullptr, bytes);
  std::vector<int32_t> tokens(N);
  std::vector<float> adv(N, 0.5f), lp(N), H(N), mlp(N), mH(N);
  for (int64_t i = 0; i < N; ++i) tokens[i] = (int32_t)(rng() % V);
  // GSPO's sequences: 16 of N/16 tokens (the remainder in the last).
  std::vector<int32_t> seqs(16, (int32_t)(N / 16));
  seqs.back() += (int32_t)(N - 16 * (N / 16));
  PapoCall base;
  base.N = N, base.V = V, base.logits = z, base.dtype = dtype, base.maskedLogits = zm, base.maskedDtype = dtype;
  base.tokens = tokens.data(), base.advantages = adv.data();
  base.params.perceptionCoef = 0.02, base.params.entropyCoef = 0.01, base.params.maskedEntropyCoef = 0.02;
  base.params.onPolicy = 1, base.params.hasMasked = 1, base.normScale = (double)N;
  base.gradLogits = g, base.gradType = dtype, base.gradMaskedLogits = gm, base.gradMaskedType = dtype;
  base.outLogProbs = lp.data(), base.outEntropy = H.data(), base.outMaskedLogProbs = mlp.data(), base.outMaskedEntropy = mH.data();
  CudaExec ex;
  ex.onDevice = true;

  const int reps = 10;
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
    printf("%-22s %-16s %9.3f ms %8.1f GB/s %6.2fx %-16s %5.0f%% of its rate  +%.1f MiB\n", kase, kernel, ms,
           moved / ms / 1e6, ms / roofMs, roof, 100.0 * roofMs / ms, extraMiB);
    printf("JSON {\"gpu\":\"%s\",\"case\":\"%s\",\"kernel\":\"%s\",\"dtype\":\"%s\",\"N\":%lld,\"V\":%lld,\"medianMs\":%.4f,"
           "\"gbPerS\":%.2f,\"vsRoofline\":%.4f,\"roofline\":\"%s\",\"rooflineMs\":%.4f,\"extraDeviceMiB\":%.2f}\n",
           prop.name, kase, kernel, dname, (long long)N, (long long)V, ms, moved / ms / 1e6, ms / roofMs, roof, roofMs,
           extraMiB);
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
    const double ms = median_ms([&] { papo_loss_cuda(call, ex); }, kern.id == KERNEL_K0_NAIVE ? 3 : reps);
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
  time_call("fwd+bwd gspo (phases)", k1, gspo, rw, copyMs, "d2d copy");  // always k1 (docs/objective.md)

  PapoCall inPlace = base;  // every row checked by a forward phase before the first gradient overwrites a logit
  inPlace.gradLogits = z, inPlace.gradMaskedLogits = zm;
  time_call("fwd+bwd in place", k2, inPlace, rw, copyMs, "d2d copy");

  LogProbsCall lc;
  lc.N = N, lc.V = V, lc.logits = z, lc.dtype = dtype, lc.tokens = tokens.data(), lc.outLogProbs = lp.data(), lc.outEntropy = H.data();
  ex.kernel = KERNEL_K2_FUSED;
  MemProbe mem;
  log_probs_cuda(lc, ex);
  const double extra = mem.mib();
  const double fwdMs = median_ms([&] { log_probs_cuda(lc, ex); }, reps);
  row("forward only (1 path)", "logProbs", fwdMs, bytes, readMs / 2, "read-only pass", extra);
}

int bench(int64_t N, int64_t V) {
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  printf("# %s (sm_%d%d, %d SMs, %.0f MB L2), driver %d, runtime %d\n", prop.name, prop.major, prop.minor,
         prop.multiProcessorCount, prop.l2CacheSize / 1e6, driver, runtime);
  for (int32_t dtype : {DT_BF16, DT_F32}) bench_dtype(prop, N, V, dtype);
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
  if (argc > 1 && std::string(argv[1]) == "--bench")
    return bench(argc > 2 ? atoll(argv[2]) : 8192, argc > 3 ? atoll(argv[3]) : 151936);
  return parity();
}
