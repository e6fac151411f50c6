#include "papo_cpu.h"

#include <math.h>

#include <atomic>
#include <string>
#include <vector>

#include "core/reduce.h"
#include "core/token_weights.h"
#include "core/row_status.h"
#include "core/sequence_phase.h"
#include "core/thread_pool.h"
#include "core/vocab_stats.h"
#include "row_kernels.h"

namespace papo {

namespace {

// Rows per chunk: enough work per claim to amortise the atomic, few enough to balance two paths of rows.
int64_t row_grain(int64_t N, int64_t V) {
  const int64_t target = (int64_t)1 << 18;  // elements per chunk
  int64_t g = V >= target ? 1 : target / (V > 0 ? V : 1);
  const int64_t perThread = (N + ThreadPool::instance().size() * 4 - 1) / (ThreadPool::instance().size() * 4);
  if (g > perThread) g = perThread;
  return g < 1 ? 1 : g;
}

// Gradients of at least this many bytes in a call are written with non-temporal stores: they no longer stay in
// the caches until the caller reads them, and a plain store first reads every line it writes. Measured with the
// gradients read once after the call (docs/steady-state.md): plain stores 20% faster at 10 MB, even at 19 MB,
// streaming 10% faster from 39 MB.
constexpr int64_t kStreamBytes = (int64_t)16 << 20;

// What the statistics of a row pair keep for its gradients, per thread (a chunk's rows run on one thread, each
// row's gradients right after its statistics): e_j of both paths and their blocks' running maxima.
struct KeptExps {
  std::vector<float> exps, blockMax;
  void fit(int64_t V) {
    if ((int64_t)exps.size() < 2 * V) exps.resize(2 * V);
    if ((int64_t)blockMax.size() < 2 * row_blocks(V)) blockMax.resize(2 * row_blocks(V));
  }
};
thread_local KeptExps kept;

// Bad rows found by the workers: the kind per row and the lowest index.
struct RowErrors {
  std::atomic<int64_t> first{INT64_MAX};
  std::vector<int32_t> kind;  // per row: 0 ok, else a RowStatus or kTargetExcluded
  explicit RowErrors(int64_t N) : kind(N, 0) {}
  void set(int64_t row, int32_t k) {
    kind[row] = k;
    int64_t cur = first.load();
    while (row < cur && !first.compare_exchange_weak(cur, row)) {
    }
  }
};
// The lowest bad row (so the message does not depend on scheduling), if any, becomes the error.
void throw_first_row_error(const RowErrors& errors, const char* tensor, const char* maskedTensor,
                           const std::vector<uint8_t>* onMasked, const int32_t* tokens) {
  const int64_t row = errors.first.load();
  if (row == INT64_MAX) return;
  throw_row_error(errors.kind[row], row, onMasked && (*onMasked)[row] ? maskedTensor : tensor, tokens[row]);
}

}  // namespace

const char* cpu_isa() { return select_row_kernels().isa; }

double cpu_exp_floor() {
  const RowKernels& k = select_row_kernels();
  const int64_t threads = ThreadPool::instance().size();
  std::vector<double> rates(threads, 0.0);
  k.exp_rate(200);  // warm-up (clock, caches)
  ThreadPool::instance().parallel_for(threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) rates[t] = k.exp_rate(4000);
  });
  double sum = 0;
  for (double r : rates) sum += r;
  return sum;
}

PapoMetrics papo_loss_cpu(const PapoCall& call) {
  const RowKernels& k = select_row_kernels();
  const int64_t N = call.N, V = call.V;
  const float invTau = (float)(1.0 / call.temperature);
  const TokenWeights w = token_weights(call);
  const TokenArrays arrays = token_arrays(call, w);
  // GSPO and perception top-p: every row's statistics first, the terms per sequence, then the gradients.
  const bool phased = needs_sequence_phase(call.params);
  // A vocabulary shard's row statistics are given (merged), so its forward is O(1) per row.
  const bool split = call.vocabStats != nullptr;
  std::vector<RowValues> values(phased ? N : 0);
  std::vector<TokenTerms> terms(N);
  std::vector<RowStats> stats(N), mstats(call.maskedLogits ? N : 0);
  std::vector<double> H(N), Hm(call.maskedLogits ? N : 0);
  RowErrors errors(N);
  std::vector<uint8_t> errorOnMasked(N, 0);  // so the message names the right tensor
  const size_t esz = dtype_bytes(call.dtype), mesz = dtype_bytes(call.maskedDtype);
  const size_t gsz = dtype_bytes(call.gradType), mgsz = dtype_bytes(call.gradMaskedType);
  auto rowPtr = [V](const void* base, int64_t i, size_t size) {
    return static_cast<const char*>(base) + i * V * (int64_t)size;  // 64-bit offsets: N * V passes 2^31
  };

  // Statistics of both paths and the per-token terms; false when the row is bad (recorded in errors). keep: the
  // exponentials of the paths with a gradient are kept (this thread's `kept`) for backward(i, true).
  auto forward = [&](int64_t i, bool keep) {
    const int64_t o = call.tokens[i];
    const int64_t nb = row_blocks(V);
    auto rowStats = [&](const void* logits, int32_t dtype, bool grad, int64_t path) {
      return keep && grad ? k.stats_exps(logits, dtype, V, invTau, o, kept.exps.data() + path * V,
                                         kept.blockMax.data() + path * nb)
                          : k.stats(logits, dtype, V, invTau, o);
    };
    const RowStats s = split ? merged_row_stats(call.vocabStats, N, i)
                             : rowStats(rowPtr(call.logits, i, esz), call.dtype, call.gradLogits != nullptr, 0);
    if (s.status != ROW_OK) return errors.set(i, s.status), false;
    stats[i] = s;
    const double lp = (double)s.targetScaled - s.lse;
    H[i] = s.entropy;
    call.outLogProbs[i] = (float)lp;
    call.outEntropy[i] = (float)s.entropy;
    double a = 0.0;
    if (call.maskedLogits) {
      const RowStats ms = split ? merged_row_stats(call.maskedVocabStats, N, i)
                                : rowStats(rowPtr(call.maskedLogits, i, mesz), call.maskedDtype,
                                           call.gradMaskedLogits != nullptr, 1);
      if (ms.status != ROW_OK) return errorOnMasked[i] = 1, errors.set(i, ms.status), false;
      mstats[i] = ms;
      a = (double)ms.targetScaled - ms.lse;
      Hm[i] = ms.entropy;
      call.outMaskedLogProbs[i] = (float)a;
      call.outMaskedEntropy[i] = (float)ms.entropy;
    } else if (call.maskedLogProbs) {
      a = call.maskedLogProbs[i];
    }
    const double m = call.mask ? call.mask[i] : 1.0;
    if (m == 0.0) return true;  // terms[i] stays zero: no loss, zero gradient
    if (isinf(lp) || isinf(a)) return errorOnMasked[i] = !isinf(lp), errors.set(i, kTargetExcluded), false;
    const double hm = call.maskedLogits ? Hm[i] : 0.0;
    if (phased)
      values[i] = RowValues{lp, a, s.entropy, hm};
    else
      terms[i] = token_terms(call.params, token_input(arrays, i, lp, a, s.entropy, hm));
    return true;
  };
  const bool inPlace = (call.gradLogits && call.gradLogits == call.logits) ||
                       (call.gradMaskedLogits && call.gradMaskedLogits == call.maskedLogits);
  // In place, the lines written were just read: nothing to save by streaming them.
  const bool stream = !inPlace && N * V * (int64_t)((call.gradLogits ? gsz : 0) + (call.gradMaskedLogits ? mgsz : 0)) >=
                                      kStreamBytes;
  // kept: from this thread's exponentials of forward(i, true), else recomputed (the same bits).
  auto backward = [&](int64_t i, bool fromKept) {
    const int64_t column = call.tokens[i] - call.vocabStart;
    const int64_t o = column >= 0 && column < V ? column : -1;
    const TokenTerms& t = terms[i];
    const int64_t nb = row_blocks(V);
    auto rowGrad = [&](const void* logits, int32_t dtype, const char* out, int32_t outType, const RowGrad& g,
                       int64_t path) {
      if (fromKept)
        k.grad_from_exps(logits, dtype, kept.exps.data() + path * V, kept.blockMax.data() + path * nb,
                         const_cast<char*>(out), outType, V, g, stream);
      else
        k.grad(logits, dtype, const_cast<char*>(out), outType, V, g, stream);
    };
    if (call.gradLogits)
      rowGrad(rowPtr(call.logits, i, esz), call.dtype, rowPtr(call.gradLogits, i, gsz), call.gradType,
              RowGrad{invTau, stats[i], t.gLp, t.gH, o}, 0);
    if (call.gradMaskedLogits)
      rowGrad(rowPtr(call.maskedLogits, i, mesz), call.maskedDtype, rowPtr(call.gradMaskedLogits, i, mgsz),
              call.gradMaskedType, RowGrad{invTau, mstats[i], t.gA, t.gHm, o}, 1);
  };

  const int64_t grain = row_grain(N, 2 * V);
  if (!inPlace && !phased && !split) {
    // One task per row: the gradients follow the statistics at once, from the exponentials they kept in cache.
    ThreadPool::instance().parallel_for(N, grain, [&](int64_t begin, int64_t end) {
      if (call.gradLogits || call.gradMaskedLogits) kept.fit(V);
      for (int64_t i = begin; i < end; ++i)
        if (forward(i, true)) backward(i, true);
    });
  } else {
    // In place, every row is checked before the first gradient overwrites a logit, so a rejected call leaves
    // the caller's logits intact; a sequence-level term needs every row first. This costs a second read of each
    // row from memory.
    ThreadPool::instance().parallel_for(N, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) forward(i, false);
    });
  }
  throw_first_row_error(errors, "logits", "maskedLogits", &errorOnMasked, call.tokens);
  if (phased) sequence_terms(call, w, values.data(), terms.data());
  if (inPlace || phased || split)
    ThreadPool::instance().parallel_for(N, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) backward(i, false);
    });
  return reduce_terms(call, w, terms.data(), H.data(), call.maskedLogits ? Hm.data() : nullptr);
}

void log_probs_cpu(const LogProbsCall& call) {
  const RowKernels& k = select_row_kernels();
  const float invTau = (float)(1.0 / call.temperature);
  const size_t esz = dtype_bytes(call.dtype);
  RowErrors errors(call.N);
  ThreadPool::instance().parallel_for(call.N, row_grain(call.N, call.V), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const void* row = static_cast<const char*>(call.logits) + i * call.V * (int64_t)esz;
      const RowStats s = k.stats(row, call.dtype, call.V, invTau, call.tokens[i]);
      if (s.status != ROW_OK) {
        errors.set(i, s.status);
        continue;
      }
      call.outLogProbs[i] = (float)((double)s.targetScaled - s.lse);
      call.outEntropy[i] = (float)s.entropy;
    }
  });
  throw_first_row_error(errors, "logits", "logits", nullptr, call.tokens);
}

void vocab_shard_stats_cpu(const VocabStatsCall& call) {
  const RowKernels& k = select_row_kernels();
  const int64_t N = call.N, V = call.V;
  const float invTau = (float)(1.0 / call.temperature);
  const size_t esz = dtype_bytes(call.dtype);
  RowErrors errors(N);
  double* out = call.out;
  ThreadPool::instance().parallel_for(N, row_grain(N, V), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const char* row = static_cast<const char*>(call.logits) + i * V * (int64_t)esz;
      const int64_t column = call.tokens[i] - call.vocabStart;
      const bool owns = column >= 0 && column < V;
      const RowSums s = k.sums(row, call.dtype, V, invTau, owns ? column : -1);
      if (s.status != ROW_OK && s.status != ROW_NO_FINITE) {  // a shard of -Infinity only is fine
        errors.set(i, s.status);
        continue;
      }
      const bool empty = s.status == ROW_NO_FINITE;
      out[VS_MAX * N + i] = empty ? -INFINITY : (double)s.maxScaled;
      out[VS_SUM_EXP * N + i] = empty ? 0.0 : s.sumExp;
      out[VS_SUM_EXP_X * N + i] = empty ? 0.0 : s.sumExpShifted + (double)s.maxScaled * s.sumExp;
      out[VS_TARGET * N + i] = owns ? (double)s.targetScaled : 0.0;
    }
  });
  throw_first_row_error(errors, call.tensorName.c_str(), call.tensorName.c_str(), nullptr, call.tokens);
}

}  // namespace papo
