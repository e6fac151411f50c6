// The per-element row math of kernel k3, in base 2 with the scale folded in: x2 = z * (log2(e) / tau), so that
// each exponential is one ex2.approx.ftz (exp2_ftz, device_prims.cuh; flushing p below 2^-126 to 0 changes no
// sum and no gradient above the fp32 floor), and no per-element NaN / +Infinity test.
//
//   statistics: m = max x2, s = sum 2^(x2 - m), t = sum 2^(x2 - m) (x2 - m), merged online as in row_block.cuh;
//     a NaN logit makes s or t NaN and +Infinity makes m +Infinity, so a row is checked once, on its totals
//     (classify_row(), row_block.cuh, then finds which, exactly, on the rare bad row).
//   natural units at the end: max = m ln2, logSum = log2(s) ln2, entropy = logSum - (t / s) ln2.
//   gradient: with y2 = x2 - (m + log2 s), p = 2^y2 and ln p = y2 ln2,
//     dL/dz = (1/tau) [gLp (1[j=o] - p) - gH p (ln p + H)] = -p (c0 + c1 y2) off the target,
//     c0 = a + b H, c1 = b ln2 (a = gLp / tau, b = gH / tau), written as fma(-p, ..., +0) so an excluded token
//     (x2 = -inf, p = 0) gets exactly +0.
#pragma once

#include <math.h>
#include <stdint.h>

#include "core/row_status.h"
#include "cuda/device_prims.cuh"
#include "row_block.cuh"

namespace papo {
namespace cuda {

constexpr double kLn2 = 0.6931471805599453;

// The accumulator of row_block.cuh in base 2: x2 = z log2(e) / tau.
struct Base2Units {
  static constexpr float kClamp = -128.f;
  static __device__ __forceinline__ float exp(float y2) { return exp2_ftz(y2); }
  static __device__ __forceinline__ float rescale(float d2) { return exp2f(d2); }
};
using OnlineSoftmax2 = OnlineSoftmaxIn<Base2Units>;

// Kernel k3's reductions: block_merge() of row_block.cuh over this accumulator.
using StatsScratch2 = BlockScratch<OnlineSoftmax2>;

// A path's RowStats in natural units from its base-2 totals (the same definitions as the CPU's RowStats), and
// K = m + log2(s), the gradient's offset: log2(s) is taken once for both. targetX is the sampled token's logit
// (fp32, unscaled), read ahead of the totals.
struct Stats2 {
  RowStats s;
  float K;
};

template <class S>
__device__ Stats2 finish_stats2(const OnlineSoftmax2& tot, const typename S::T* row, int64_t V, float invTau,
                                float targetX) {
  Stats2 r{};
  if (tot.bad()) {
    r.s.status = classify_row<S>(row, V, invTau * kLog2e);
    if (r.s.status == ROW_OK) r.s.status = ROW_NAN;  // the sums went NaN without a NaN logit: never expected
    return r;
  }
  if (tot.m == -INFINITY) {
    r.s.status = ROW_NO_FINITE;
    return r;
  }
  const double log2s = log2((double)tot.s), logSum = log2s * kLn2;
  r.s.maxScaled = (float)((double)tot.m * kLn2);
  r.s.logSum = (float)logSum;
  r.s.lse = (double)tot.m * kLn2 + logSum;
  r.s.entropy = logSum - (double)tot.t / (double)tot.s * kLn2;
  if (r.s.entropy < 0.0) r.s.entropy = 0.0;  // rounding on a one-hot row
  r.s.targetScaled = targetX * invTau;
  r.s.status = ROW_OK;
  r.K = (float)((double)tot.m + log2s);
  return r;
}

// The gradient's coefficients in base 2. K comes from the base-2 totals themselves, so a row's largest logit
// gets y2 = -log2(s) exactly as the statistics saw it (a one-element row: p = 1 and a gradient of exactly 0).
struct GradCoef2 {
  float a, b;     // gLp / tau, gH / tau (both 0: no gradient to compute)
  float scale2;   // log2(e) / tau
  float K;        // m + log2(s): y2 = x2 - K
  float c0, c1;   // a + b H, b ln2
  float target2;  // the sampled token's x2, read before any gradient is written
  int64_t target;
};

// H: the path's entropy (RowStats::entropy), K from Stats2.
__device__ __forceinline__ GradCoef2 grad_coef2(float invTau, double H, float K, double gLp, double gH, int64_t target,
                                                float target2) {
  GradCoef2 g;
  g.a = (float)(invTau * gLp);
  g.b = (float)(invTau * gH);
  g.scale2 = invTau * kLog2e;
  g.K = K;
  g.c0 = (float)(invTau * gLp + invTau * gH * H);
  g.c1 = (float)(invTau * gH * kLn2);
  g.target2 = target2;
  g.target = target;
  return g;
}

// dL/dz at a non-target element from its scaled logit x2.
__device__ __forceinline__ float grad_of2(const GradCoef2& g, float x2) {
  const float y2 = x2 - g.K;
  const float p = exp2_ftz(y2);
  return fmaf(-p, fmaf(g.c1, fmaxf(y2, -128.f), g.c0), 0.f);
}

}  // namespace cuda
}  // namespace papo
