// The row kernels, written once and compiled per instruction set: a translation unit defines PAPO_ISA (the
// namespace) and its compiler flags, then includes this file (kernels_baseline.cpp, kernels_avx2.cpp, ...).
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <chrono>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "row_kernels.h"

#ifndef PAPO_ISA
#error "define PAPO_ISA before including row_kernels_impl.h"
#endif
#define PAPO_STR2(x) #x
#define PAPO_STR(x) PAPO_STR2(x)

namespace papo {
namespace PAPO_ISA {
namespace {

#include "simd.h"

// A block stays in L1 between its two sweeps (max, then exp-sums), so each row is read from memory once.
constexpr int64_t kBlock = 2048;

// A row whose sums went NaN or whose max is +Infinity, classified by one scalar pass (rare: the call fails).
// NaN anywhere outranks +Infinity (core/row_status.h).
template <class S>
int32_t classify_bad_row(const typename S::T* row, int64_t V, float invTau) {
  int32_t status = ROW_OK;
  for (int64_t j = 0; j < V; ++j) {
    const float x = load_one<S>(row + j);
    if (x != x) return ROW_NAN;
    if (x * invTau == INFINITY) status = ROW_POS_INF;
  }
  return status == ROW_OK ? ROW_NAN : status;  // ROW_OK cannot happen: the sums were NaN for a reason
}

// The sums behind a row's statistics (and x_target unless target < 0). A row with no finite entry is
// ROW_NO_FINITE with max -Infinity and zero sums: a vocabulary shard may be that (core/vocab_stats.h), a whole row
// may not.
template <class S>
RowSums sums_impl(const typename S::T* row, int64_t V, float invTau, int64_t target) {
  RowSums st{};
  float M = -INFINITY;
  double sumE = 0.0, sumEY = 0.0;  // sum e^(x-M), sum e^(x-M) (x-M), relative to the running max M
  const vf vInv = splat(invTau);
  for (int64_t b0 = 0; b0 < V; b0 += kBlock) {
    const typename S::T* p = row + b0;
    const int64_t len = V - b0 < kBlock ? V - b0 : kBlock;
    const int64_t full = len / kLanes * kLanes;

    // The max alone: NaN is found from the block's sums below (vexp keeps it), not element by element.
    vf mx = splat(-INFINITY);
    for (int64_t i = 0; i < full; i += kLanes) mx = vmax(mx, S::load(p + i));
    if (full < len) mx = vmax(mx, load_partial<S>(p + full, len - full, -INFINITY));
    const float bm = hmax(mx) * invTau;
    if (bm == INFINITY || bm != bm) {
      st.status = classify_bad_row<S>(row, V, invTau);
      return st;
    }
    if (bm == -INFINITY) {  // an all-excluded block adds nothing, unless it hides a NaN the max skipped
      for (int64_t j = 0; j < len; ++j)
        if (load_one<S>(p + j) != load_one<S>(p + j)) {
          st.status = classify_bad_row<S>(row, V, invTau);
          return st;
        }
      continue;
    }
    if (bm > M) {
      if (sumE > 0.0) {
        const double shift = (double)M - (double)bm;
        const double f = exp(shift);
        sumEY = f * (sumEY + shift * sumE);
        sumE *= f;
      }
      M = bm;
    }

    const vf vM = splat(M);
    vf s{}, t{};
    for (int64_t i = 0; i < full; i += kLanes) {
      const vf y = vmax(splat(-88.0f), S::load(p + i) * vInv - vM);
      const vf e = vexp(y);
      s += e;
      t += e * y;
    }
    if (full < len) {
      const vf y = vmax(splat(-88.0f), load_partial<S>(p + full, len - full, -INFINITY) * vInv - vM);
      const vf e = vexp(y);
      s += e;
      t += e * y;
    }
    const double bs = hsum(s);
    if (bs != bs) {  // a NaN logit in this block
      st.status = classify_bad_row<S>(row, V, invTau);
      return st;
    }
    sumE += bs;
    sumEY += hsum(t);
  }
  st.maxScaled = M;
  st.sumExp = sumE;
  st.sumExpShifted = sumEY;
  st.targetScaled = target >= 0 ? load_one<S>(row + target) * invTau : 0.0f;
  st.status = M == -INFINITY ? ROW_NO_FINITE : ROW_OK;
  return st;
}

template <class S>
RowStats stats_impl(const typename S::T* row, int64_t V, float invTau, int64_t target) {
  const RowSums sums = sums_impl<S>(row, V, invTau, target);
  RowStats st{};
  st.status = sums.status;
  if (sums.status != ROW_OK) return st;
  const double logSum = log(sums.sumExp);
  st.maxScaled = sums.maxScaled;
  st.logSum = (float)logSum;
  st.lse = (double)sums.maxScaled + logSum;
  st.entropy = logSum - sums.sumExpShifted / sums.sumExp;
  if (st.entropy < 0.0) st.entropy = 0.0;  // rounding on a one-hot row
  st.targetScaled = sums.targetScaled;
  return st;
}

template <class SI, class SO>
void grad_impl(const typename SI::T* row, typename SO::T* out, int64_t V, const RowGrad& g) {
  const float a = (float)(g.invTau * g.gLp), b = (float)(g.invTau * g.gH);
  if (a == 0.0f && b == 0.0f) {
    memset(out, 0, (size_t)V * sizeof(typename SO::T));
    return;
  }
  // log p_j = (x_j - max) - logSum: both differences are small, so p keeps its digits for large logits.
  const vf vInv = splat(g.invTau), vM = splat(g.stats.maxScaled), vLogSum = splat(g.stats.logSum);
  const vf va = splat(a), vb = splat(b), vH = splat((float)g.stats.entropy);
  auto gradOf = [&](vf z) {
    const vf y = vmax((z * vInv - vM) - vLogSum, splat(-88.0f));
    const vf p = vexp(y);
    return splat(0.0f) - p * (va + vb * (y + vH));  // 0 - 0 is +0: an excluded token's gradient is exactly +0
  };
  const int64_t full = V / kLanes * kLanes;
  for (int64_t i = 0; i < full; i += kLanes) SO::store(out + i, gradOf(SI::load(row + i)));
  if (full < V) store_partial<SO>(out + full, V - full, gradOf(load_partial<SI>(row + full, V - full, -INFINITY)));

  // The sampled token's one-hot term, from the saved logit (the row may already be overwritten in place),
  // added in fp32 and rounded once; a vocabulary shard without the token has none (target < 0).
  if (g.target < 0) return;
  const float yo = fmaxf((g.stats.targetScaled - g.stats.maxScaled) - g.stats.logSum, -88.0f);
  const float po = vexp(splat(yo))[0];
  const vf go = splat(a - po * (a + b * (yo + (float)g.stats.entropy)));
  store_partial<SO>(out + g.target, 1, go);
}

RowStats stats(const void* row, int32_t dtype, int64_t V, float invTau, int64_t target) {
  switch (dtype) {
    case DT_F16:
      return stats_impl<F16>(static_cast<const uint16_t*>(row), V, invTau, target);
    case DT_BF16:
      return stats_impl<BF16>(static_cast<const uint16_t*>(row), V, invTau, target);
    default:
      return stats_impl<F32>(static_cast<const float*>(row), V, invTau, target);
  }
}

RowSums sums(const void* row, int32_t dtype, int64_t V, float invTau, int64_t target) {
  switch (dtype) {
    case DT_F16:
      return sums_impl<F16>(static_cast<const uint16_t*>(row), V, invTau, target);
    case DT_BF16:
      return sums_impl<BF16>(static_cast<const uint16_t*>(row), V, invTau, target);
    default:
      return sums_impl<F32>(static_cast<const float*>(row), V, invTau, target);
  }
}

template <class SI>
void grad_to(const void* row, void* out, int32_t outType, int64_t V, const RowGrad& g) {
  const typename SI::T* in = static_cast<const typename SI::T*>(row);
  switch (outType) {
    case DT_F16:
      return grad_impl<SI, F16>(in, static_cast<uint16_t*>(out), V, g);
    case DT_BF16:
      return grad_impl<SI, BF16>(in, static_cast<uint16_t*>(out), V, g);
    default:
      return grad_impl<SI, F32>(in, static_cast<float*>(out), V, g);
  }
}

void grad(const void* row, int32_t dtype, void* out, int32_t outType, int64_t V, const RowGrad& g) {
  switch (dtype) {
    case DT_F16:
      return grad_to<F16>(row, out, outType, V, g);
    case DT_BF16:
      return grad_to<BF16>(row, out, outType, V, g);
    default:
      return grad_to<F32>(row, out, outType, V, g);
  }
}

double exp_rate(int64_t reps) {
  alignas(64) float buf[kBlock];
  for (int64_t i = 0; i < kBlock; ++i) buf[i] = -0.25f * (float)(i % 61);
  vf acc{};
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < reps; ++r)
    for (int64_t i = 0; i < kBlock; i += kLanes) {
      vf y;
      memcpy(&y, buf + i, sizeof y);
      acc += vexp(y);
    }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile float sink = acc[0];  // keeps the loop
  (void)sink;
  return (double)reps * (double)kBlock / s;
}

}  // namespace

const RowKernels& row_kernels() {
  static const RowKernels k = {PAPO_STR(PAPO_ISA), stats, sums, grad, exp_rate};
  return k;
}

}  // namespace PAPO_ISA
}  // namespace papo
