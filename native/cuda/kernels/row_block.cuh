// Block-wide row primitives of the CUDA kernels: one thread block walks one row of V logits.
//
//   block_row_stats: max, log-sum-exp, the sampled token's scaled logit and the full entropy, in one read of
//     the row (online softmax: each thread keeps (m, s, t) = (running max, sum e^(x-m), sum e^(x-m)(x-m)) and
//     the block merges them). Same definitions as the CPU's RowStats; the sums run in another order and the
//     exponentials are approximations, so the backends agree to within rounding (the tests' tolerances), not
//     bit for bit.
//   block_row_grad: dL/dz_j = (1/tau) [ gLp (1[j=o] - p_j) - gH p_j (log p_j + H) ], p_j recomputed in fp32 from
//     the statistics and rounded once to the output type, stored evict-first. Safe in place (out == row): each
//     element is read and written by the same thread, and the one-hot term is added from the saved target
//     logit after a barrier.
//
// Each exponential is e^y = 2^(y log2 e) by one ex2.approx.ftz (exp2_ftz, device_prims.cuh; a p below 2^-126
// flushed to 0 changes no sum and no gradient above the fp32 floor), and no element is tested for NaN or
// +Infinity: a NaN makes s or t NaN and +Infinity makes m +Infinity, so a row is checked once, on its totals
// (classify_row() then finds which, exactly, on the rare bad row). The arithmetic stays in natural units (unlike
// k3's base 2, row_base2.cuh): x - max is then exact for the largest logits at temperature 1, and a logit
// finite in natural units never overflows to -Infinity by a scale.
//
// Who sums what is a function of the column alone, never of where the row sits: thread t takes the groups of
// U = 16 bytes' worth of columns [gU, gU + U) for g = t, t + blockDim, ..., and the last V mod U columns one
// each, so a row gives the same bits at any position in the batch and in any staging chunk. A row that starts
// 16-byte aligned loads its groups as 16-byte vectors; one that does not (N*V puts it anywhere) loads the same
// groups element by element. Offsets are 64-bit throughout.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "core/dtype.h"
#include "core/row_status.h"
#include "cuda/device_prims.cuh"

namespace papo {
namespace cuda {

constexpr int kThreads = 512;  // per block; every kernel here is launched with this many
constexpr int kUnroll = 4;     // vectors in flight per thread
static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");

// fp32 statistics for every storage type; 16-bit types travel as raw bits, as on the host.
struct F32 {
  using T = float;
  static constexpr int kVec = 4;
  static __device__ __forceinline__ float to_float(float v) { return v; }
  static __device__ __forceinline__ float from_float(float f) { return f; }
};
struct BF16 {
  using T = uint16_t;
  static constexpr int kVec = 8;
  static __device__ __forceinline__ float to_float(uint16_t b) { return __uint_as_float((uint32_t)b << 16); }
  static __device__ __forceinline__ uint16_t from_float(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
};
struct F16 {
  using T = uint16_t;
  static constexpr int kVec = 8;
  static __device__ __forceinline__ float to_float(uint16_t b) { return __half2float(__ushort_as_half(b)); }
  static __device__ __forceinline__ uint16_t from_float(float f) { return __half_as_ushort(__float2half_rn(f)); }
};

// The instance of a kernel template for a call's dtypes, on the host: f(S{}) for the input's storage type, and
// f(SI{}, SO{}) with the gradient's (the input's type or fp32).
template <class F>
auto with_type(int32_t dtype, F&& f) {
  switch (dtype) {
    case DT_BF16:
      return f(BF16{});
    case DT_F16:
      return f(F16{});
    default:
      return f(F32{});
  }
}
template <class F>
auto with_types(int32_t dtype, int32_t gradType, F&& f) {
  const bool f32grad = gradType == DT_F32;
  return with_type(dtype, [&](auto si) {
    using SI = decltype(si);
    if constexpr (std::is_same_v<SI, F32>) return f(F32{}, F32{});
    else return f32grad ? f(SI{}, F32{}) : f(SI{}, SI{});
  });
}

template <class S>
union Vec16 {
  uint4 raw;
  typename S::T e[S::kVec];
};

// A 16-byte group's storage values as fp32, scaled.
template <class S>
__device__ __forceinline__ void to_floats(const uint4& raw, float scale, float (&x)[S::kVec]) {
  Vec16<S> v;
  v.raw = raw;
#pragma unroll
  for (int k = 0; k < S::kVec; ++k) x[k] = S::to_float(v.e[k]) * scale;
}

template <class S>
__device__ __forceinline__ void load_vec(const typename S::T* p, float scale, float (&x)[S::kVec]) {
  to_floats<S>(load16(p), scale, x);
}

// One group of kVec columns at p, in storage form: one 16-byte load where p is aligned (vec), else element by
// element, with the same values either way. The row loops keep their groups in flight in this form and convert
// one group at a time: half the registers of fp32 for 16-bit types, and what keeps papo_rows from spilling.
template <class S>
__device__ __forceinline__ uint4 load_group(const typename S::T* p, bool vec) {
  if (vec) return load16(p);
  Vec16<S> v;
#pragma unroll
  for (int k = 0; k < S::kVec; ++k) v.e[k] = p[k];
  return v.raw;
}

template <class T>
__device__ __forceinline__ bool aligned16(const T* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// n values (n * sizeof(T) a multiple of 16, p 16-byte aligned) as whole 16-byte stores, evict-first: gradients
// are written once and never read back by the kernels.
template <class S, int n>
__device__ __forceinline__ void store_vec(typename S::T* p, const float (&g)[n]) {
  constexpr int per = 16 / sizeof(typename S::T);
  static_assert(n % per == 0, "whole vectors");
#pragma unroll
  for (int w = 0; w < n / per; ++w) {
    Vec16<S> v;
#pragma unroll
    for (int k = 0; k < per; ++k) v.e[k] = S::from_float(g[w * per + k]);
    store16_streaming(p + w * per, v.raw);
  }
}

// Elements before the first 16-byte boundary of p (all of them when p is not even element-aligned, which the
// host rules out). Kernel k3's bulk copies start there.
template <class T>
__device__ __forceinline__ int64_t head_elems(const T* p, int64_t V) {
  const int64_t h = (int64_t)((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15) / (int64_t)sizeof(T);
  return h < V ? h : V;
}

// ---- statistics ---------------------------------------------------------------------------------------------

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float exp_ftz(float y) { return exp2_ftz(y * kLog2e); }

// The units of an accumulator's values. Natural (this file): x = z / tau, e^y as 2^(y log2 e); kernel k3's base 2
// is row_base2.cuh's Base2Units. kClamp is the y below which e is 0 (ftz), where it multiplies e.
struct NaturalUnits {
  static constexpr float kClamp = -88.f;
  static __device__ __forceinline__ float exp(float y) { return exp_ftz(y); }
  static __device__ __forceinline__ float rescale(float d) { return exp_ftz(d); }
};

// Trivially constructible (it lives in __shared__ memory): start from empty().
template <class Units>
struct OnlineSoftmaxIn {
  float m, s, t;  // m == -inf <=> nothing seen yet (then s == t == 0, or s NaN: a NaN seen)

  static __device__ __forceinline__ OnlineSoftmaxIn empty() { return OnlineSoftmaxIn{-INFINITY, 0.f, 0.f}; }

  // Values already scaled. -inf entries (excluded tokens) add exactly nothing: e = exp(-inf) = 0, and y is
  // clamped only where it multiplies e, so that e * y never meets 0 * -inf.
  template <int n>
  __device__ __forceinline__ void add(const float (&x)[n]) {
    float vm = -INFINITY;
#pragma unroll
    for (int k = 0; k < n; ++k) vm = fmaxf(vm, x[k]);
    if (vm == -INFINITY) {  // all excluded, or NaN (which fmaxf skips): the rare vector is checked here
#pragma unroll
      for (int k = 0; k < n; ++k)
        if (x[k] != x[k]) s = NAN;
      return;
    }
    if (vm > m) {
      if (m != -INFINITY) {
        const float d = m - vm, f = Units::rescale(d);
        t = f * t + (f * d) * s;  // not f * (t + d * s): d * s overflows for a huge jump, and 0 * -inf is NaN
        s *= f;
      }
      m = vm;
    }
#pragma unroll
    for (int k = 0; k < n; ++k) {
      const float y = x[k] - m;
      const float e = Units::exp(y);
      s += e;
      t = fmaf(e, fmaxf(y, Units::kClamp), t);  // the clamp keeps 0 * -inf out; a NaN y still makes e NaN
    }
  }

  // Symmetric in (a, b), so every lane of a butterfly ends with the same bits.
  static __device__ __forceinline__ OnlineSoftmaxIn merge(const OnlineSoftmaxIn& a, const OnlineSoftmaxIn& b) {
    if (a.m == -INFINITY || b.m == -INFINITY) {
      OnlineSoftmaxIn r = a.m == -INFINITY ? b : a;
      if (a.s != a.s || b.s != b.s) r.s = NAN;  // a NaN seen by a part that saw nothing finite
      return r;
    }
    OnlineSoftmaxIn r;
    r.m = fmaxf(a.m, b.m);
    const float da = a.m - r.m, db = b.m - r.m, fa = Units::rescale(da), fb = Units::rescale(db);
    r.s = a.s * fa + b.s * fb;
    r.t = (fa * a.t + (fa * da) * a.s) + (fb * b.t + (fb * db) * b.s);
    return r;
  }

  // The lane `o` away's accumulator (a butterfly step).
  __device__ __forceinline__ OnlineSoftmaxIn shfl_xor(int o) const {
    return OnlineSoftmaxIn{__shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o),
                           __shfl_xor_sync(0xffffffffu, t, o)};
  }

  // NaN seen (s or t NaN) or +Infinity (m): classify_row() says which.
  __device__ __forceinline__ bool bad() const { return s != s || t != t || m == INFINITY; }
};
using OnlineSoftmax = OnlineSoftmaxIn<NaturalUnits>;

// The reductions below serve any online-softmax accumulator with empty(), merge() and shfl_xor(): this file's
// natural-unit one, and kernel k3's base-2 one (row_base2.cuh).
template <class Acc>
__device__ __forceinline__ Acc warp_merge(Acc st) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) st = Acc::merge(st, st.shfl_xor(o));
  return st;
}

template <class Acc>
struct BlockScratch {
  Acc warp[kThreads / 32];
  Acc total;
};
using StatsScratch = BlockScratch<OnlineSoftmax>;

// The block's merge of every thread's accumulator: every thread returns the same total. Starts and ends with a
// barrier, so sh can be reused.
template <class Acc>
__device__ __forceinline__ Acc block_merge(Acc st, BlockScratch<Acc>& sh) {
  st = warp_merge(st);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  __syncthreads();  // the previous call's readers of sh are done
  if (lane == 0) sh.warp[warp] = st;
  __syncthreads();
  if (warp == 0) {
    Acc w = lane < nwarps ? sh.warp[lane] : Acc::empty();
    w = warp_merge(w);
    if (lane == 0) sh.total = w;
  }
  __syncthreads();
  return sh.total;
}

// The verdict of a row whose totals are bad, by one exact pass (NaN anywhere outranks +Infinity), at the
// scale the totals saw (a logit that overflows only there is +Infinity to the kernel). Kernel k3 shares it.
template <class S>
__device__ int32_t classify_row(const typename S::T* row, int64_t V, float scale) {
  int32_t status = ROW_NO_FINITE;
  for (int64_t j = 0; j < V; ++j) {
    const float x = S::to_float(row[j]) * scale;
    if (x != x) return ROW_NAN;
    if (x == INFINITY) status = ROW_POS_INF;
    else if (status == ROW_NO_FINITE && x != -INFINITY) status = ROW_OK;
  }
  return status;
}

// A row's RowStats from the merged (m, s, t) of all its elements; reads the sampled token's logit.
template <class S>
__device__ RowStats finish_stats(const OnlineSoftmax& tot, const typename S::T* row, int64_t V, int64_t target,
                                 float invTau) {
  RowStats r{};
  if (tot.bad()) {
    r.status = classify_row<S>(row, V, invTau);
    if (r.status == ROW_OK) r.status = ROW_NAN;  // the sums went NaN without a NaN logit: never expected
  } else if (tot.m == -INFINITY) {
    r.status = ROW_NO_FINITE;
  } else {
    const double logSum = log((double)tot.s);
    r.maxScaled = tot.m;
    r.logSum = (float)logSum;
    r.lse = (double)tot.m + logSum;
    r.entropy = logSum - (double)tot.t / (double)tot.s;
    if (r.entropy < 0.0) r.entropy = 0.0;  // rounding on a one-hot row
    r.targetScaled = S::to_float(row[target]) * invTau;
    r.status = ROW_OK;
  }
  return r;
}

// The online softmax of the whole row, merged: every thread of the block returns the same totals. Starts and ends
// with a barrier, so sh can be reused.
template <class S>
__device__ OnlineSoftmax block_row_totals(const typename S::T* row, int64_t V, float invTau, StatsScratch& sh) {
  constexpr int U = S::kVec;
  OnlineSoftmax st = OnlineSoftmax::empty();
  const int64_t nvec = V / U;
  const int64_t tail = nvec * U;
  const int64_t tid = threadIdx.x, nt = blockDim.x;
  const bool vec = aligned16(row);  // block-uniform

  int64_t v = tid;
  for (; v + (kUnroll - 1) * nt < nvec; v += kUnroll * nt) {
    uint4 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) raw[u] = load_group<S>(row + (v + u * nt) * U, vec);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float x[U];
      to_floats<S>(raw[u], invTau, x);
      st.add(x);
    }
  }
  for (; v < nvec; v += nt) {
    float x[U];
    to_floats<S>(load_group<S>(row + v * U, vec), invTau, x);
    st.add(x);
  }
  for (int64_t j = tail + tid; j < V; j += nt) {
    const float x[1] = {S::to_float(row[j]) * invTau};
    st.add(x);
  }
  return block_merge(st, sh);
}

// Every thread of the block returns the same RowStats. Starts and ends with a barrier, so sh can be reused.
template <class S>
__device__ RowStats block_row_stats(const typename S::T* row, int64_t V, float invTau, int64_t target,
                                    StatsScratch& sh) {
  return finish_stats<S>(block_row_totals<S>(row, V, invTau, sh), row, V, target, invTau);
}

// ---- gradient -----------------------------------------------------------------------------------------------

struct GradCoef {
  float invTau, a, b, M, L;  // a = gLp / tau, b = gH / tau; M, L from RowStats
  float c0;                  // a + b H
  float targetScaled;
  int64_t target;            // < 0: the sampled token is in another vocabulary shard (no one-hot term here)
};

__device__ __forceinline__ GradCoef grad_coef(float invTau, const RowStats& s, double gLp, double gH, int64_t target) {
  return GradCoef{invTau, (float)(invTau * gLp), (float)(invTau * gH), s.maxScaled, s.logSum,
                  (float)(invTau * gLp + invTau * gH * s.entropy), s.targetScaled, target};
}

__device__ __forceinline__ float grad_of(const GradCoef& c, float x /* scaled */) {
  // log p = (x - max) - logSum: both differences small, so p keeps its digits for large logits. An excluded
  // token (x = -inf) has p = 0 exactly, hence a gradient of exactly +0 as on the CPU (fma(-0, finite, +0)); the
  // clamp of log p only keeps 0 * -inf out of the entropy term.
  const float y = (x - c.M) - c.L;
  const float p = exp_ftz(y);
  return fmaf(-p, fmaf(c.b, fmaxf(y, -88.f), c.c0), 0.f);
}

// One group's gradients from its storage values, rounded once and stored at out (its first column): whole 16-byte
// stores where out is aligned (outVec), else element by element.
template <class SI, class SO>
__device__ __forceinline__ void grad_group(const uint4& raw, typename SO::T* out, bool outVec, const GradCoef& c) {
  constexpr int U = SI::kVec;
  float g[U];
  to_floats<SI>(raw, c.invTau, g);
#pragma unroll
  for (int k = 0; k < U; ++k) g[k] = grad_of(c, g[k]);
  if (outVec) {
    store_vec<SO, U>(out, g);
  } else {
#pragma unroll
    for (int k = 0; k < U; ++k) out[k] = SO::from_float(g[k]);
  }
}

// The gradient of the sampled token: its softmax part plus the one-hot term (the caller writes it after the
// element's plain value, behind a barrier).
template <class SO>
__device__ __forceinline__ typename SO::T target_grad(const GradCoef& c) {
  return SO::from_float(c.a + grad_of(c, c.targetScaled));
}

// Exact zeros over out[lo, hi), no reads: a masked-out token or a detached path.
template <class SO>
__device__ __forceinline__ void block_zero(typename SO::T* out, int64_t lo, int64_t hi) {
  for (int64_t j = lo + threadIdx.x; j < hi; j += blockDim.x) out[j] = SO::from_float(0.f);
}

// All threads of the block call this (it ends with a barrier). out may equal row.
template <class SI, class SO>
__device__ void block_row_grad(const typename SI::T* row, typename SO::T* out, int64_t V, const GradCoef& c) {
  constexpr int U = SI::kVec;
  const int64_t tid = threadIdx.x, nt = blockDim.x;
  if (c.a == 0.f && c.b == 0.f) {
    block_zero<SO>(out, 0, V);
    __syncthreads();
    return;
  }
  // The same groups as the statistics (each element's gradient depends on it alone, so this is for speed).
  const int64_t nvec = V / U;
  const int64_t tail = nvec * U;
  const bool vec = aligned16(row), outVec = aligned16(out);  // block-uniform
  int64_t v = tid;
  for (; v + (kUnroll - 1) * nt < nvec; v += kUnroll * nt) {
    uint4 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) raw[u] = load_group<SI>(row + (v + u * nt) * U, vec);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) grad_group<SI, SO>(raw[u], out + (v + u * nt) * U, outVec, c);
  }
  for (; v < nvec; v += nt) grad_group<SI, SO>(load_group<SI>(row + v * U, vec), out + v * U, outVec, c);
  for (int64_t j = tail + tid; j < V; j += nt) out[j] = SO::from_float(grad_of(c, SI::to_float(row[j]) * c.invTau));

  __syncthreads();  // the body's value at the target is written; now replace it with the one-hot version
  if (threadIdx.x == 0 && c.target >= 0) out[c.target] = target_grad<SO>(c);  // a shard without the token: none
  __syncthreads();
}

}  // namespace cuda
}  // namespace papo
