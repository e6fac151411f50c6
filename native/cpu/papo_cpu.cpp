#include "papo_cpu.h"

#include <math.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "core/reduce.h"
#include "core/token_weights.h"
#include "core/row_status.h"
#include "core/sequence_phase.h"
#include "core/thread_pool.h"
#include "core/vocab_merge.h"
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
// row's gradients right after its statistics): e_j of both paths (every shard's columns of the row side by side)
// and their blocks' running maxima.
struct KeptExps {
  std::vector<float> exps, blockMax;
  void fit(int64_t columns, int64_t blocks) {
    if ((int64_t)exps.size() < 2 * columns) exps.resize(2 * columns);
    if ((int64_t)blockMax.size() < 2 * blocks) blockMax.resize(2 * blocks);
  }
};
thread_local KeptExps kept;
thread_local std::vector<double> shardFields;  // a row's fields of every shard, field-major (core/vocab_merge.h)

// Bad rows found by the workers: the kind per row, where it was found, and the lowest index.
struct RowErrors {
  std::atomic<int64_t> first{INT64_MAX};
  std::vector<int32_t> kind;  // per row: 0 ok, else a RowStatus or kTargetExcluded
  std::vector<uint8_t> onMasked;  // so the message names the right tensor
  std::vector<int32_t> shard;     // the vocabulary shard, -1: the merged row
  explicit RowErrors(int64_t N) : kind(N, 0), onMasked(N, 0), shard(N, 0) {}
  bool set(int64_t row, int32_t k, bool masked = false, int32_t inShard = 0) {
    kind[row] = k;
    onMasked[row] = masked;
    shard[row] = inShard;
    int64_t cur = first.load();
    while (row < cur && !first.compare_exchange_weak(cur, row)) {
    }
    return false;
  }
};
// The lowest bad row (so the message does not depend on scheduling), if any, becomes the error. names[masked]:
// the tensor; with shards, indexed by the shard it was found in.
void throw_first_row_error(const RowErrors& errors, const char* const names[2], bool sharded, const int32_t* tokens) {
  const int64_t row = errors.first.load();
  if (row == INT64_MAX) return;
  std::string name = names[errors.onMasked[row]];
  if (sharded && errors.shard[row] < 0)
    throw Error(ErrorCode::InvalidArgument,
                name + ": row " + std::to_string(row) + " has no finite logit in any shard (every token excluded)");
  if (sharded) name += "[" + std::to_string(errors.shard[row]) + "]";
  throw_row_error(errors.kind[row], row, name.c_str(), tokens[row]);
}

// A shard's fields of one token (core/vocab_stats.h) from its row's sums, K apart: a shard of -Infinity only
// has none but its target.
void shard_fields(const RowSums& s, bool owns, double* f, int64_t K) {
  const bool empty = s.status == ROW_NO_FINITE;
  f[VS_MAX * K] = empty ? -INFINITY : (double)s.maxScaled;
  f[VS_SUM_EXP * K] = empty ? 0.0 : s.sumExp;
  f[VS_SUM_EXP_X * K] = empty ? 0.0 : s.sumExpShifted + (double)s.maxScaled * s.sumExp;
  f[VS_TARGET * K] = owns ? (double)s.targetScaled : 0.0;
}

// papo_loss_cpu over K vocabulary shards of each path (K = 1 and merged null: an unsplit call, or a shard given
// the merged statistics). With merged, each row's shard statistics are merged into it (and maskedMerged) as the
// row is read, so that its gradients follow from the exponentials just computed, as for an unsplit row.
PapoMetrics run_papo(const PapoCall* shards, int64_t K, double* merged, double* maskedMerged) {
  const RowKernels& k = select_row_kernels();
  const PapoCall& call = shards[0];  // the per-token inputs and outputs
  const int64_t N = call.N;
  const float invTau = (float)(1.0 / call.temperature);
  const TokenWeights w = token_weights(call);
  const TokenArrays arrays = token_arrays(call, w);
  // GSPO and perception top-p: every row's statistics first, the terms per sequence, then the gradients.
  const bool phased = needs_sequence_phase(call.params);
  const bool fused = merged != nullptr;
  // A vocabulary shard given its rows' merged statistics: its forward is O(1) per row.
  const bool given = !fused && call.vocabStats != nullptr;
  // Where each shard's e_j and block maxima sit among a row's kept ones; columns and blocks of all shards.
  std::vector<int64_t> colOff(K), blkOff(K);
  int64_t columns = 0, blocks = 0;
  bool anyGrad = false, inPlace = false;
  int64_t gradBytes = 0;
  for (int64_t s = 0; s < K; ++s) {
    const PapoCall& c = shards[s];
    colOff[s] = columns, blkOff[s] = blocks;
    columns += c.V, blocks += row_blocks(c.V);
    anyGrad = anyGrad || c.gradLogits || c.gradMaskedLogits;
    inPlace = inPlace || (c.gradLogits && c.gradLogits == c.logits) ||
              (c.gradMaskedLogits && c.gradMaskedLogits == c.maskedLogits);
    gradBytes += N * c.V * (int64_t)((c.gradLogits ? dtype_bytes(c.gradType) : 0) +
                                     (c.gradMaskedLogits ? dtype_bytes(c.gradMaskedType) : 0));
  }
  std::vector<RowValues> values(phased ? N : 0);
  std::vector<TokenTerms> terms(N);
  std::vector<RowStats> stats(N), mstats(call.maskedLogits ? N : 0);
  std::vector<double> H(N), Hm(call.maskedLogits ? N : 0);
  RowErrors errors(N);
  auto rowPtr = [](const void* base, int64_t i, int64_t V, int32_t dtype) {
    return static_cast<const char*>(base) + i * V * (int64_t)dtype_bytes(dtype);  // 64-bit offsets: N * V passes 2^31
  };
  auto logitsOf = [](const PapoCall& c, int path) { return path ? c.maskedLogits : c.logits; };
  auto dtypeOf = [](const PapoCall& c, int path) { return path ? c.maskedDtype : c.dtype; };
  auto gradOf = [](const PapoCall& c, int path) { return path ? c.gradMaskedLogits : c.gradLogits; };

  // Row i's statistics of one path (0: logits, 1: masked); keep: the exponentials of the shards with a gradient
  // are kept (this thread's `kept`) for backward(i, true). A bad row is recorded in errors.
  auto pathStats = [&](int64_t i, int path, bool keep) -> RowStats {
    const int64_t o = call.tokens[i];
    auto rowSums = [&](int64_t s, int64_t target) {
      const PapoCall& c = shards[s];
      const void* row = rowPtr(logitsOf(c, path), i, c.V, dtypeOf(c, path));
      return keep && gradOf(c, path)
                 ? k.sums_exps(row, dtypeOf(c, path), c.V, invTau, target, kept.exps.data() + path * columns + colOff[s],
                               kept.blockMax.data() + path * blocks + blkOff[s])
                 : k.sums(row, dtypeOf(c, path), c.V, invTau, target);
    };
    RowStats st{};
    if (given) {
      st = merged_row_stats(path ? call.maskedVocabStats : call.vocabStats, N, i);
    } else if (!fused) {
      const void* row = rowPtr(logitsOf(call, path), i, call.V, dtypeOf(call, path));
      st = keep && gradOf(call, path)
               ? k.stats_exps(row, dtypeOf(call, path), call.V, invTau, o, kept.exps.data() + path * columns,
                              kept.blockMax.data() + path * blocks)
               : k.stats(row, dtypeOf(call, path), call.V, invTau, o);
      if (st.status != ROW_OK) errors.set(i, st.status, path);
      return st;
    } else {
      shardFields.resize(VS_FIELDS * K);
      double* f = shardFields.data();
      for (int64_t s = 0; s < K; ++s) {
        const int64_t column = o - shards[s].vocabStart;
        const bool owns = column >= 0 && column < shards[s].V;
        const RowSums sums = rowSums(s, owns ? column : -1);
        if (sums.status != ROW_OK && sums.status != ROW_NO_FINITE) {  // a shard of -Infinity only is fine
          st.status = sums.status;
          errors.set(i, sums.status, path, (int32_t)s);
          return st;
        }
        shard_fields(sums, owns, f + s, K);
      }
      double out[VS_FIELDS];
      merge_shard_fields(f + VS_MAX * K, f + VS_SUM_EXP * K, f + VS_SUM_EXP_X * K, f + VS_TARGET * K, K, 1, out);
      double* m = path ? maskedMerged : merged;
      for (int64_t field = 0; field < VS_FIELDS; ++field) m[field * N + i] = out[field];
      st = merged_row_stats(m, N, i);
    }
    if (st.status != ROW_OK) errors.set(i, st.status, path, -1);
    return st;
  };
  // The shard that holds token o (the one an excluded target is in).
  auto owner = [&](int64_t o) {
    for (int64_t s = 0; s < K; ++s)
      if (o - shards[s].vocabStart < shards[s].V) return (int32_t)s;
    return (int32_t)(K - 1);
  };

  // Statistics of both paths and the per-token terms; false when the row is bad (recorded in errors).
  auto forward = [&](int64_t i, bool keep) {
    const RowStats s = pathStats(i, 0, keep);
    if (s.status != ROW_OK) return false;
    stats[i] = s;
    const double lp = (double)s.targetScaled - s.lse;
    H[i] = s.entropy;
    call.outLogProbs[i] = (float)lp;
    call.outEntropy[i] = (float)s.entropy;
    double a = 0.0;
    if (call.maskedLogits) {
      const RowStats ms = pathStats(i, 1, keep);
      if (ms.status != ROW_OK) return false;
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
    if (isinf(lp) || isinf(a)) return errors.set(i, kTargetExcluded, !isinf(lp), owner(call.tokens[i]));
    const double hm = call.maskedLogits ? Hm[i] : 0.0;
    if (phased)
      values[i] = RowValues{lp, a, s.entropy, hm};
    else
      terms[i] = token_terms(call.params, token_input(arrays, i, lp, a, s.entropy, hm));
    return true;
  };
  // In place, the lines written were just read: nothing to save by streaming them.
  const bool stream = !inPlace && gradBytes >= kStreamBytes;
  // kept: from this thread's exponentials of forward(i, true), else recomputed (the same bits).
  auto backward = [&](int64_t i, bool fromKept) {
    const TokenTerms& t = terms[i];
    for (int64_t s = 0; s < K; ++s) {
      const PapoCall& c = shards[s];
      const int64_t column = call.tokens[i] - c.vocabStart;
      const int64_t o = column >= 0 && column < c.V ? column : -1;
      for (int path = 0; path < 2; ++path) {
        void* out = gradOf(c, path);
        if (!out) continue;
        const RowGrad g = path ? RowGrad{invTau, mstats[i], t.gA, t.gHm, o} : RowGrad{invTau, stats[i], t.gLp, t.gH, o};
        const void* row = rowPtr(logitsOf(c, path), i, c.V, dtypeOf(c, path));
        const int32_t outType = path ? c.gradMaskedType : c.gradType;
        char* dst = const_cast<char*>(rowPtr(out, i, c.V, outType));
        if (fromKept)
          k.grad_from_exps(row, dtypeOf(c, path), kept.exps.data() + path * columns + colOff[s],
                           kept.blockMax.data() + path * blocks + blkOff[s], dst, outType, c.V, g, stream);
        else
          k.grad(row, dtypeOf(c, path), dst, outType, c.V, g, stream);
      }
    }
  };

  const int64_t grain = row_grain(N, 2 * columns);
  const bool twoPasses = inPlace || phased || given;
  if (!twoPasses) {
    // One task per row: the gradients follow the statistics at once, from the exponentials they kept in cache.
    ThreadPool::instance().parallel_for(N, grain, [&](int64_t begin, int64_t end) {
      if (anyGrad) kept.fit(columns, blocks);
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
  static const char* const names[2] = {"logits", "maskedLogits"};
  throw_first_row_error(errors, names, fused, call.tokens);
  if (phased) sequence_terms(call, w, values.data(), terms.data());
  if (twoPasses)
    ThreadPool::instance().parallel_for(N, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) backward(i, false);
    });
  return reduce_terms(call, w, terms.data(), H.data(), call.maskedLogits ? Hm.data() : nullptr);
}

}  // namespace

const char* cpu_isa() { return select_row_kernels().isa; }

namespace {
// A copy whose stores go around the caches, as the kernels write gradients of a call this large (kStreamBytes):
// memcpy itself streams only above a size of its own choosing, and a plain store reads each line first.
void copy_streaming(char* dst, const char* src, int64_t n) {
#if defined(__SSE2__)
  int64_t i = 0;
  for (; i < n && ((uintptr_t)(dst + i) % 16); ++i) dst[i] = src[i];
  for (; i + 64 <= n; i += 64)
    for (int64_t j = 0; j < 64; j += 16)
      _mm_stream_si128((__m128i*)(dst + i + j), _mm_loadu_si128((const __m128i*)(src + i + j)));
  _mm_sfence();
  memcpy(dst + i, src + i, (size_t)(n - i));
#else
  memcpy(dst, src, (size_t)n);
#endif
}
}  // namespace

double cpu_copy_floor(int64_t bytes) {
  // Resident buffers, kept between calls: the first call's page faults are its own, the next ones time the memory.
  static std::vector<char> src, dst;
  if ((int64_t)src.size() < bytes) src.assign(bytes, 1), dst.assign(bytes, 0);
  const int64_t threads = ThreadPool::instance().size();
  const int64_t part = (bytes / threads + 63) / 64 * 64;
  const auto t0 = std::chrono::steady_clock::now();
  ThreadPool::instance().parallel_for(threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t from = std::min(bytes, t * part), to = std::min(bytes, from + part);
      copy_streaming(dst.data() + from, src.data() + from, to - from);
    }
  });
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

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

PapoMetrics papo_loss_cpu(const PapoCall& call) { return run_papo(&call, 1, nullptr, nullptr); }

PapoMetrics papo_loss_cpu_sharded(const ShardedPapoCall& call) {
  return run_papo(call.shards.data(), (int64_t)call.shards.size(), call.stats, call.maskedStats);
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
  static const char* const names[2] = {"logits", "logits"};
  throw_first_row_error(errors, names, false, call.tokens);
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
      shard_fields(s, owns, out + i, N);
    }
  });
  const char* const names[2] = {call.tensorName.c_str(), call.tensorName.c_str()};
  throw_first_row_error(errors, names, false, call.tokens);
}

}  // namespace papo
