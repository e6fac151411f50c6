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

constexpr int64_t kBlock = kRowBlock;

// The argument of e_j = exp(x_j - M_b), clamped where exp is 0 anyway: one expression for the statistics' sums and
// both gradients, so that they round alike. At most a rounding above 0 (M_b is the block's max), so vexp_bounded.
static inline vf shifted(vf x, vf vInv, vf vM) { return vmax(splat(-88.0f), x * vInv - vM); }

// The max of a block, scaled by invTau. Four accumulators, as one would be bound by the latency of each max; a max
// is exact in any order. NaN is not tracked here: the block's sums find it (vexp keeps it).
template <class S>
float block_max(const typename S::T* p, int64_t len, float invTau) {
  const int64_t full = len / kLanes * kLanes;
  vf m0 = splat(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
  int64_t i = 0;
  for (; i + 4 * kLanes <= full; i += 4 * kLanes) {
    m0 = vmax(m0, S::load(p + i));
    m1 = vmax(m1, S::load(p + i + kLanes));
    m2 = vmax(m2, S::load(p + i + 2 * kLanes));
    m3 = vmax(m3, S::load(p + i + 3 * kLanes));
  }
  for (; i < full; i += kLanes) m0 = vmax(m0, S::load(p + i));
  if (full < len) m0 = vmax(m0, load_partial<S>(p + full, len - full, -INFINITY));
  return hmax(vmax(vmax(m0, m1), vmax(m2, m3))) * invTau;
}

// While a block is computed from L1, the next one is fetched: the hardware prefetcher alone runs too little
// ahead of a sweep that spends this long per line, so memory and arithmetic took turns.
template <class S>
static inline void prefetch_next_block(const typename S::T* p) {
#if defined(__SSE__)
  _mm_prefetch((const char*)(p + kBlock), _MM_HINT_T0);
#endif
}

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
// may not. With exps, e_j and M_b are kept (row_kernels.h); an all-excluded block keeps e_j = 0.
template <class S>
RowSums sums_impl(const typename S::T* row, int64_t V, float invTau, int64_t target, float* exps, float* blockMax) {
  RowSums st{};
  float M = -INFINITY;
  double sumE = 0.0, sumEY = 0.0;  // sum e^(x-M), sum e^(x-M) (x-M), relative to the running max M
  const vf vInv = splat(invTau);
  for (int64_t b0 = 0; b0 < V; b0 += kBlock) {
    const typename S::T* p = row + b0;
    const int64_t len = V - b0 < kBlock ? V - b0 : kBlock;
    const int64_t full = len / kLanes * kLanes;

    const float bm = block_max<S>(p, len, invTau);
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
      if (exps) {
        memset(exps + b0, 0, (size_t)len * sizeof(float));
        blockMax[b0 / kBlock] = M;
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
    if (exps) blockMax[b0 / kBlock] = M;

    const vf vM = splat(M);
    vf s{}, t{};
    for (int64_t i = 0; i < full; i += kLanes) {
      prefetch_next_block<S>(p + i);
      const vf y = shifted(S::load(p + i), vInv, vM);
      const vf e = vexp_bounded(y);
      if (exps) F32::store(exps + b0 + i, e);
      s += e;
      t += e * y;
    }
    if (full < len) {
      const vf y = shifted(load_partial<S>(p + full, len - full, -INFINITY), vInv, vM);
      const vf e = vexp_bounded(y);
      if (exps) store_partial<F32>(exps + b0 + full, len - full, e);
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
RowStats stats_impl(const typename S::T* row, int64_t V, float invTau, int64_t target, float* exps = nullptr,
                    float* blockMax = nullptr) {
  const RowSums sums = sums_impl<S>(row, V, invTau, target, exps, blockMax);
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

// dL/dz_j of one row, element by element: p_j = e_j * c_b (row_kernels.h). Entropy: gH != 0, so the log p_j term is
// there; without it the logits are not read again (0 * (y + H) adds a zero to a, which changes nothing, so both
// forms give the same bits).
template <bool Entropy>
struct GradTerms {
  vf vInv, vM, vLogSum, va, vb, vH;
  explicit GradTerms(const RowGrad& g, float a, float b)
      : vInv(splat(g.invTau)), vM(splat(g.stats.maxScaled)), vLogSum(splat(g.stats.logSum)), va(splat(a)),
        vb(splat(b)), vH(splat((float)g.stats.entropy)) {}
  // z: the logits (read only with Entropy), p: the probabilities.
  vf operator()(vf z, vf p) const {
    if (!Entropy) return splat(0.0f) - p * va;
    // log p_j = (x_j - max) - logSum: both differences are small, so p keeps its digits for large logits.
    const vf y = vmax((z * vInv - vM) - vLogSum, splat(-88.0f));
    return splat(0.0f) - p * (va + vb * (y + vH));  // 0 - 0 is +0: an excluded token's gradient is exactly +0
  }
};

// e^(M_b - max - logSum): what turns a block's e_j into p_j. An all-excluded start of the row (M_b = -inf) gives 0.
static inline vf block_scale(float blockMax, const RowStats& s) {
  return splat((float)exp((double)blockMax - (double)s.maxScaled - (double)s.logSum));
}

// Writes out[b0, b0 + len) as value(i, n) gives it for the n <= kLanes elements from i. Streamed: non-temporal
// stores, from the first element where a whole register's store is aligned (the ones before it stored plainly).
template <class SO, class F>
static inline void write_block(typename SO::T* out, int64_t b0, int64_t len, bool stream, const F& value) {
  int64_t i = b0;
  const int64_t end = b0 + len;
  if (stream) {
    constexpr uintptr_t bytes = kLanes * sizeof(typename SO::T);
    int64_t head = (int64_t)((bytes - (uintptr_t)(out + i) % bytes) % bytes / sizeof(typename SO::T));
    if (head > len) head = len;
    if (head) store_partial<SO>(out + i, head, value(i, head));
    for (i += head; i + kLanes <= end; i += kLanes) SO::stream(out + i, value(i, kLanes));
  } else {
    for (; i + kLanes <= end; i += kLanes) SO::store(out + i, value(i, kLanes));
  }
  if (i < end) store_partial<SO>(out + i, end - i, value(i, end - i));
}

// +0 over out[b0, b0 + len), streamed as the gradients around it are: memset's plain stores read every line first
// and leave the caches full of lines nobody reads back.
template <class SO>
static inline void write_zeros(typename SO::T* out, int64_t b0, int64_t len, bool stream) {
  if (!stream) return (void)memset(out + b0, 0, (size_t)len * sizeof(typename SO::T));
  write_block<SO>(out, b0, len, true, [](int64_t, int64_t) { return splat(0.0f); });
}

template <class S>
static inline vf load_n(const typename S::T* p, int64_t n, float fill) {
  return n >= kLanes ? S::load(p) : load_partial<S>(p, n, fill);
}

// The sampled token's one-hot term, from the saved logit (the row may already be overwritten in place), added in
// fp32 and rounded once; a vocabulary shard without the token has none (target < 0).
template <class SO>
void add_target_term(typename SO::T* out, const RowGrad& g, float a, float b) {
  if (g.target < 0) return;
  const float yo = fmaxf((g.stats.targetScaled - g.stats.maxScaled) - g.stats.logSum, -88.0f);
  const float po = vexp(splat(yo))[0];
  const vf go = splat(a - po * (a + b * (yo + (float)g.stats.entropy)));
  store_partial<SO>(out + g.target, 1, go);
}

// Whether a row's gradient is all zeros (a token without weight); otherwise its coefficients a and b.
static inline bool zero_grad(const RowGrad& g, float& a, float& b) {
  a = (float)(g.invTau * g.gLp);
  b = (float)(g.invTau * g.gH);
  return a == 0.0f && b == 0.0f;
}

// The head of plain stores before the first aligned register (write_block) counts whole elements.
template <class SO>
static inline bool can_stream(const void* out) {
  return (uintptr_t)out % sizeof(typename SO::T) == 0;
}

// The gradient without kept exponentials: each block's running max and e_j again, as stats_exps computed them.
template <class SI, class SO, bool Entropy>
void grad_impl(const typename SI::T* row, typename SO::T* out, int64_t V, const RowGrad& g, bool stream, float a,
               float b) {
  const GradTerms<Entropy> terms(g, a, b);
  stream = stream && can_stream<SO>(out);
  float M = -INFINITY;
  for (int64_t b0 = 0; b0 < V; b0 += kBlock) {
    const typename SI::T* p = row + b0;
    const int64_t len = V - b0 < kBlock ? V - b0 : kBlock;
    const float bm = block_max<SI>(p, len, g.invTau);
    if (bm == -INFINITY) {  // e_j = 0 throughout, as kept by stats_exps: +0 gradients
      write_zeros<SO>(out, b0, len, stream);
      continue;
    }
    if (bm > M) M = bm;
    const vf vM = splat(M), c = block_scale(M, g.stats);
    write_block<SO>(out, b0, len, stream, [&](int64_t i, int64_t n) {
      prefetch_next_block<SI>(row + i);
      const vf z = load_n<SI>(row + i, n, -INFINITY);
      return terms(z, vexp_bounded(shifted(z, terms.vInv, vM)) * c);
    });
  }
  if (stream) stream_fence();
  add_target_term<SO>(out, g, a, b);
}

template <class SI, class SO, bool Entropy>
void grad_exps_impl(const typename SI::T* row, const float* exps, const float* blockMax, typename SO::T* out,
                    int64_t V, const RowGrad& g, bool stream, float a, float b) {
  const GradTerms<Entropy> terms(g, a, b);
  stream = stream && can_stream<SO>(out);
  for (int64_t b0 = 0; b0 < V; b0 += kBlock) {
    const int64_t len = V - b0 < kBlock ? V - b0 : kBlock;
    const vf c = block_scale(blockMax[b0 / kBlock], g.stats);
    write_block<SO>(out, b0, len, stream, [&](int64_t i, int64_t n) {
      const vf p = load_n<F32>(exps + i, n, 0.0f) * c;
      return terms(Entropy ? load_n<SI>(row + i, n, -INFINITY) : vf{}, p);
    });
  }
  if (stream) stream_fence();
  add_target_term<SO>(out, g, a, b);
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

RowStats stats_exps(const void* row, int32_t dtype, int64_t V, float invTau, int64_t target, float* exps,
                    float* blockMax) {
  switch (dtype) {
    case DT_F16:
      return stats_impl<F16>(static_cast<const uint16_t*>(row), V, invTau, target, exps, blockMax);
    case DT_BF16:
      return stats_impl<BF16>(static_cast<const uint16_t*>(row), V, invTau, target, exps, blockMax);
    default:
      return stats_impl<F32>(static_cast<const float*>(row), V, invTau, target, exps, blockMax);
  }
}

RowSums sums_exps(const void* row, int32_t dtype, int64_t V, float invTau, int64_t target, float* exps,
                  float* blockMax) {
  switch (dtype) {
    case DT_F16:
      return sums_impl<F16>(static_cast<const uint16_t*>(row), V, invTau, target, exps, blockMax);
    case DT_BF16:
      return sums_impl<BF16>(static_cast<const uint16_t*>(row), V, invTau, target, exps, blockMax);
    default:
      return sums_impl<F32>(static_cast<const float*>(row), V, invTau, target, exps, blockMax);
  }
}

RowSums sums(const void* row, int32_t dtype, int64_t V, float invTau, int64_t target) {
  return sums_exps(row, dtype, V, invTau, target, nullptr, nullptr);
}

// A row's gradient for its storage type SI and the gradient's SO, from kept exponentials (exps) or not.
template <class SI, class SO>
void grad_typed(const typename SI::T* row, const float* exps, const float* blockMax, typename SO::T* out, int64_t V,
                const RowGrad& g, bool stream) {
  float a, b;
  if (zero_grad(g, a, b)) {
    stream = stream && can_stream<SO>(out);
    write_zeros<SO>(out, 0, V, stream);
    if (stream) stream_fence();
    return;
  }
  if (exps) {
    if (b != 0.0f) return grad_exps_impl<SI, SO, true>(row, exps, blockMax, out, V, g, stream, a, b);
    return grad_exps_impl<SI, SO, false>(row, exps, blockMax, out, V, g, stream, a, b);
  }
  if (b != 0.0f) return grad_impl<SI, SO, true>(row, out, V, g, stream, a, b);
  return grad_impl<SI, SO, false>(row, out, V, g, stream, a, b);
}

template <class SI>
void grad_to(const void* row, const float* exps, const float* blockMax, void* out, int32_t outType, int64_t V,
             const RowGrad& g, bool stream) {
  const typename SI::T* in = static_cast<const typename SI::T*>(row);
  if (outType == DT_F32) return grad_typed<SI, F32>(in, exps, blockMax, static_cast<float*>(out), V, g, stream);
  return grad_typed<SI, SI>(in, exps, blockMax, static_cast<typename SI::T*>(out), V, g, stream);
}

void grad_from_exps(const void* row, int32_t dtype, const float* exps, const float* blockMax, void* out,
                    int32_t outType, int64_t V, const RowGrad& g, bool stream) {
  switch (dtype) {
    case DT_F16:
      return grad_to<F16>(row, exps, blockMax, out, outType, V, g, stream);
    case DT_BF16:
      return grad_to<BF16>(row, exps, blockMax, out, outType, V, g, stream);
    default:
      return grad_to<F32>(row, exps, blockMax, out, outType, V, g, stream);
  }
}

void grad(const void* row, int32_t dtype, void* out, int32_t outType, int64_t V, const RowGrad& g, bool stream) {
  grad_from_exps(row, dtype, nullptr, nullptr, out, outType, V, g, stream);
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
      acc += vexp_bounded(y);  // as the kernels call it: their arguments are at most 0
    }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile float sink = acc[0];  // keeps the loop
  (void)sink;
  return (double)reps * (double)kBlock / s;
}

}  // namespace

const RowKernels& row_kernels() {
  static const RowKernels k = {PAPO_STR(PAPO_ISA), stats, sums, stats_exps, sums_exps, grad, grad_from_exps, exp_rate};
  return k;
}

}  // namespace PAPO_ISA
}  // namespace papo
