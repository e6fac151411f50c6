// k3 (KERNEL_K3_CLUSTER, sm_90+): each row pair held on chip by a thread-block cluster, so every logits element is
// read from memory once and every gradient element written once (k2 reads each row twice and relies on L2 for
// the second read, which does not hold 132 row pairs of 608 KB).
//
// Per row pair, each of the C blocks of a cluster:
//   1. has the copy engine bring its slice of both rows into shared memory (cp.async.bulk, completing on an
//      mbarrier); meanwhile block 0's last warp reads the row's per-token inputs (they land during step 2);
//   2. reduces its slice's online-softmax statistics (m, s, t) per path and pushes them into block 0's shared
//      memory (a remote store);
//   3. cluster barrier; block 0's first warp merges the C partials in a fixed tree over the ranks (lanes 0-7 one
//      path, 8-15 the other), finishes both paths at once, computes the token terms (token_terms() in doubles,
//      as everywhere) from the inputs read in step 1, and pushes the verdict and the gradient coefficients into
//      every block's shared memory;
//   4. cluster barrier; every block writes its slice of both gradient rows from its shared-memory copy, with
//      streaming 16-byte stores, the sampled token's one-hot term last; block 0's first warp writes the row's
//      results to global memory (after the barrier, so that the barrier's release does not wait for them);
//   5. a block barrier (and a proxy fence) before the copy engine refills the block's slices; one cluster barrier
//      at the end, since no block may exit while another could still write into its shared memory.
// So the serial part of a row pair, between the two barriers, is one warp's work on shared memory and registers:
// no global load, no remote load, one log2 and one division per path, lanes in parallel.
//
// Who sums what is a function of the column alone, as in row_block.cuh: the row's V / U whole groups of U = 16
// bytes' worth of columns are dealt out in runs of `per` groups (block r holds groups [r per, (r + 1) per)),
// thread t of a block takes its groups t, t + blockDim, ..., and the last block the V mod U tail columns one
// each. Where the row sits in memory changes only how a group arrives: a row that starts 16-byte aligned lands
// as whole vectors; one that does not lands shifted (the copy engine moves whole 16-byte blocks), and its
// groups are read element by element, those that straddle the edge of a copy (the slice's ends, a chunk's last
// group) from global memory.
// Per element, the math is in base 2 with the scale folded in and no NaN / +Infinity test (row_base2.cuh).
// While a row pair is reduced and written, the next one's slices are already coming (two buffers, where they fit).
// The cluster size is the smallest of 1, 2, 4, 8 whose slices fit in a block's shared memory (227 KB), or
// PAPO_CUDA_CLUSTER (shape_k3, asked once per shape by the plan); where none fits, or before sm_90, the plan runs
// k2, and for a phase other than forward + backward, k1 (plan.cu). PAPO_CUDA_K3_CO_RESIDENT=2 plans two clusters
// per SM instead (blocks of 256 threads, one buffer each), so that one cluster's serial part and copy wait
// overlap the other's work on the same SMs.
//
// Written for the emulated device first (tools/cuda-emulator models clusters, distributed shared memory,
// mbarriers and bulk copies): not yet measured on a GPU.
#include <algorithm>
#include <string>

#include "cuda/cuda_resources.h"
#include "cuda/device_call.h"
#include "cuda/device_facts.h"
#include "cuda/device_prims.cuh"
#include "cuda/launch.cuh"
#include "cuda/papo_cuda.h"
#include "row_base2.cuh"
#include "row_block.cuh"
#include "row_terms.cuh"

namespace papo {
namespace cuda {

namespace {

constexpr int kK3Threads = 512;           // per block
constexpr int kK3ThreadsCoResident = 256;  // per block, two clusters per SM
static_assert(kK3Threads == kThreads, "the block reductions' scratch (StatsScratch2) is sized for kThreads");
constexpr int kMaxCluster = 8;  // the portable cluster size; the lead warp's merge tree has this many leaves
constexpr int kChunks = 4;      // one buffer: each path's slice streams in as this many chunks, each on a barrier

// One row's per-token inputs, read ahead by block 0's last warp: lane l reads the l-th into f, d or x (the
// inputs' own types, where token_view() finds them), then lane 0 reads them as finish_row() would from the
// call's arrays (in, maskedLp; ReadAhead serves them to finish_row()).
struct TokenRow {
  float f[6];   // advantages, mask, oldLogProbs, refLogProbs, rolloutLogProbs, maskedLogProbs
  double d[4];  // wAgg, wEnt, wKp, wSft
  float x[2];   // the sampled token's logit on each path, as fp32, unscaled
  int64_t target;
  TokenInput in;  // token_input() without the statistics (lp, a, H, Hm)
  double maskedLp;
};
constexpr int kTokenLanes = 12;

struct ReadAhead {
  const TokenRow& p;
  __device__ double maskedLogProb() const { return p.maskedLp; }
  __device__ double mask() const { return p.in.mask; }
  __device__ TokenInput input(double lp, double a, double H, double Hm) const {
    TokenInput r = p.in;
    r.lp = lp, r.a = a, r.H = H, r.Hm = Hm;
    return r;
  }
};

// What block 0 hands every block for the gradient pass.
struct K3Lead {
  GradCoef2 coef[2];
  int32_t status;  // the row's verdict: cluster-uniform
};

// A block's shared state (at the end of its dynamic shared memory).
struct K3Shared {
  StatsScratch2 scratch;                // the block's own reductions
  OnlineSoftmax2 part[kMaxCluster][2];  // block 0's: every block's slice statistics per path, pushed by each
  K3Lead lead;                          // every block's own copy, pushed by block 0
  TokenRow pre;                         // block 0's: the row's per-token inputs
  RowOut out;                           // block 0's: the row's results, until they go to global memory
  // Double-buffered: mbar[b] completes when buffer b's slices have landed. Streamed: mbar[q kChunks + j] when
  // chunk j of path q has, and drained[q kChunks + j] counts the threads done reading it.
  uint64_t mbar[2 * kChunks];
  uint32_t drained[2 * kChunks];
};
static_assert(sizeof(K3Shared) <= 1024, "bench/static-report.ts's K3_SHARED bounds it");
static_assert(sizeof(RowOut) % 8 == 0 && alignof(RowOut) >= 8, "RowOut is copied as 8-byte words");
static_assert(sizeof(K3Lead) % 4 == 0, "K3Lead is copied as 4-byte words");

__device__ __forceinline__ int64_t lmin(int64_t a, int64_t b) { return a < b ? a : b; }

// A block's groups of one path's row: [g0, g0 + n) of the row's G whole groups, in chunks of q groups (the
// copy engine's unit: all of them double-buffered, kChunks of them streamed). Its held copy starts at the
// 16-byte boundary at or before group g0, so group i of the slice sits at byte mis + 16 i of it.
struct Slice {
  int64_t g0, n, G, q;
  unsigned mis;  // the row's address mod 16, in bytes (a multiple of the element size)
  int chunks;
};

template <class S>
__device__ __forceinline__ Slice slice_of(const typename S::T* row, int64_t V, int64_t per, unsigned rank, bool streamed) {
  Slice s;
  s.G = V / S::kVec;
  s.g0 = lmin(s.G, (int64_t)rank * per);
  s.n = lmin(s.G, s.g0 + per) - s.g0;
  s.chunks = streamed ? kChunks : 1;
  s.q = streamed ? (per + kChunks - 1) / kChunks : per;
  if (s.q < 1) s.q = 1;
  s.mis = (unsigned)(reinterpret_cast<uintptr_t>(row) & 15);
  return s;
}

// The copy engine's part of chunk j (whole 16-byte blocks of the row inside the slice's part [j q, (j + 1) q)):
// bytes [lo, hi) of the held copy, at the same bytes of the row from the held copy's start. A shifted slice's
// groups each straddle two blocks: the first group, the last, and the last of each chunk reach blocks the
// chunk's copy does not bring, and group_at() reads those from global memory.
struct BulkPart {
  unsigned lo, hi;
};
__device__ __forceinline__ BulkPart bulk_part(const Slice& s, int j) {
  const int64_t a = j * s.q * 16, b = lmin(s.n, (j + 1) * s.q) * 16;
  const int64_t lo = a > 0 || !s.mis ? a : 16;
  return BulkPart{(unsigned)lo, (unsigned)(b > lo ? b : lo)};
}

// Group i of the slice in storage form. Aligned: one 16-byte vector of the held copy. Shifted: element by
// element, from the held copy, or from global memory for the groups that straddle a chunk's copy.
template <class S, bool kAligned>
__device__ __forceinline__ uint4 group_at(const typename S::T* row, const typename S::T* held, const Slice& sl,
                                          int64_t i) {
  constexpr int U = S::kVec;
  if (kAligned) return load16(held + i * U);
  if (i == 0 || i == sl.n - 1 || (i + 1) % sl.q == 0) return load_group<S>(row + (sl.g0 + i) * U, false);
  return load_group<S>(held + sl.mis / sizeof(typename S::T) + i * U, false);
}

// f(i, group) for this thread's groups of the slice, i = threadIdx.x, + blockDim.x, ... (the same groups in
// the same order however the slice is chunked), with before(j) ahead of a chunk this thread reads and after(j)
// once it is done with chunk j (every thread, every chunk). The aligned and the shifted loop are separate, so
// that the aligned one is vector loads only.
template <class S, class Before, class After, class F>
__device__ __forceinline__ void for_my_groups(const typename S::T* row, const typename S::T* held, const Slice& sl,
                                              Before&& before, After&& after, F&& f) {
  const int64_t t = threadIdx.x, nt = blockDim.x;
  for (int j = 0; j < sl.chunks; ++j) {
    const int64_t lo = j * sl.q, hi = lmin(sl.n, lo + sl.q);
    const int64_t i0 = lo + ((t - lo) % nt + nt) % nt;  // this thread's first group at or after lo
    if (i0 < hi) {
      before(j);
      if (sl.mis == 0) {
        for (int64_t i = i0; i < hi; i += nt) f(i, group_at<S, true>(row, held, sl, i));
      } else {
        for (int64_t i = i0; i < hi; i += nt) f(i, group_at<S, false>(row, held, sl, i));
      }
    }
    after(j);
  }
}

// Statistics of this block's part of one path: its groups, then (the last block) the tail columns. wait(j):
// chunk j has landed.
template <class S, class Wait>
__device__ OnlineSoftmax2 slice_stats(const typename S::T* row, const typename S::T* held, const Slice& sl, int64_t V,
                                      float scale2, bool last, Wait&& wait) {
  constexpr int U = S::kVec;
  OnlineSoftmax2 st = OnlineSoftmax2::empty();
  for_my_groups<S>(row, held, sl, wait, [](int) {}, [&](int64_t, const uint4& raw) {
    float x[U];
    to_floats<S>(raw, scale2, x);
    st.add(x);
  });
  if (last)
    for (int64_t j = sl.G * U + threadIdx.x; j < V; j += blockDim.x) {
      const float x[1] = {S::to_float(row[j]) * scale2};
      st.add(x);
    }
  return st;
}

// This block's part of one gradient row, from the held copy, then the one-hot term by the block that holds the
// sampled token. Every thread of the block calls it. done(j): this thread has read chunk j of the held copy.
template <class SI, class SO, class Done>
__device__ void slice_grad(const typename SI::T* row, const typename SI::T* held, typename SO::T* out, const Slice& sl,
                           int64_t V, const GradCoef2& g2, unsigned rank, unsigned C, int64_t per, Done&& done) {
  constexpr int U = SI::kVec;
  const bool last = rank == C - 1;
  const int64_t tid = threadIdx.x, nt = blockDim.x;
  if (g2.a == 0.f && g2.b == 0.f) {  // no loss on this token, or a detached path: exact zeros
    for (int j = 0; j < sl.chunks; ++j) done(j);
    const int64_t lo = sl.g0 * U, hi = last ? V : (sl.g0 + sl.n) * U;
    for (int64_t j = lo + tid; j < hi; j += nt) out[j] = SO::from_float(0.f);
    return;
  }
  const bool outVec = aligned16(out);  // block-uniform; then every group's columns start a 16-byte block
  for_my_groups<SI>(row, held, sl, [](int) {}, done, [&](int64_t i, const uint4& raw) {
    float gr[U];
    to_floats<SI>(raw, g2.scale2, gr);
#pragma unroll
    for (int k = 0; k < U; ++k) gr[k] = grad_of2(g2, gr[k]);
    typename SO::T* o = out + (sl.g0 + i) * U;
    if (outVec) {
      store_vec<SO, U>(o, gr);
    } else {
#pragma unroll
      for (int k = 0; k < U; ++k) o[k] = SO::from_float(gr[k]);
    }
  });
  if (last)
    for (int64_t j = sl.G * U + tid; j < V; j += nt) out[j] = SO::from_float(grad_of2(g2, SI::to_float(row[j]) * g2.scale2));
  __syncthreads();  // the slice is written; the owner of the sampled token replaces it with the one-hot value
  const int64_t t = g2.target;
  const unsigned owner = t < sl.G * U ? (unsigned)((t / U) / per) : C - 1;
  if (rank == owner && threadIdx.x == 0) out[t] = SO::from_float(g2.a + grad_of2(g2, g2.target2));
}

// Chunk j of this block's slice of `row`, as the copy engine moves it.
struct ChunkCopy {
  const unsigned char* from;  // the held copy's first byte, in the row
  unsigned lo, bytes;         // of the held copy
};

template <class SI>
__device__ ChunkCopy chunk_copy(const typename SI::T* row, int64_t V, int64_t per, unsigned rank, bool streamed, int j) {
  const Slice s = slice_of<SI>(row, V, per, rank, streamed);
  const BulkPart p = bulk_part(s, j);
  return ChunkCopy{reinterpret_cast<const unsigned char*>(row + s.g0 * SI::kVec) - s.mis, p.lo, p.hi - p.lo};
}

template <class TI>
__device__ __forceinline__ void start_copy(const ChunkCopy& cc, TI* held, uint64_t* bar) {
  if (cc.bytes) bulk_copy_g2s(reinterpret_cast<unsigned char*>(held) + cc.lo, cc.from + cc.lo, cc.bytes, bar);
}

// Double-buffered: one thread has the copy engine bring this block's slices of row pair r (chunk-local, both
// paths) into a buffer, completing on the buffer's barrier.
template <class SI>
__device__ void issue_slices(const DeviceCall& c, const Chunk& ch, int64_t r, int64_t per, unsigned rank,
                             typename SI::T* held0, typename SI::T* held1, uint64_t* bar) {
  using TI = typename SI::T;
  const TI* x = static_cast<const TI*>(ch.logits) + r * c.V;
  const ChunkCopy c0 = chunk_copy<SI>(x, c.V, per, rank, false, 0);
  const ChunkCopy c1 = c.hasMaskedLogits
                           ? chunk_copy<SI>(static_cast<const TI*>(ch.maskedLogits) + r * c.V, c.V, per, rank, false, 0)
                           : ChunkCopy{nullptr, 0, 0};
  mbar_arrive_expect_tx(bar, c0.bytes + c1.bytes);
  start_copy(c0, held0, bar);
  start_copy(c1, held1, bar);
}

// Streamed: chunk j of a path's row, on the chunk's own barrier. Out of line: the gradient loops that call it
// (the last thread done with a chunk) stay within the register budget.
template <class SI>
__device__ PAPO_OUT_OF_LINE void issue_chunk(const typename SI::T* row, int64_t V, int64_t per, unsigned rank, int j,
                                              typename SI::T* held, uint64_t* bar) {
  const ChunkCopy cc = chunk_copy<SI>(row, V, per, rank, true, j);
  mbar_arrive_expect_tx(bar, cc.bytes);
  start_copy(cc, held, bar);
}

// Lane `lane` of block 0's last warp: its per-token input of the row (TokenRow's order), issued before the
// statistics and stored (store_token) after them, so that the loads' latency hides behind the statistics.
template <class SI>
__device__ __forceinline__ double read_token(const DeviceCall& c, int64_t row, int lane, const typename SI::T* x,
                                             const typename SI::T* xm, int64_t target) {
  const TokenInputs& t = c.tok;
  const float* f = lane == 0 ? t.advantages : lane == 1 ? t.mask : lane == 2 ? t.oldLogProbs
                 : lane == 3 ? t.refLogProbs : lane == 4 ? t.rolloutLogProbs : lane == 5 ? t.maskedLogProbs : nullptr;
  const double* d = lane == 6 ? t.wAgg : lane == 7 ? t.wEnt : lane == 8 ? t.wKp : lane == 9 ? t.wSft : nullptr;
  if (f) return f[row];
  if (d) return d[row];
  if (lane == 10) return SI::to_float(x[target]);
  if (lane == 11 && xm) return SI::to_float(xm[target]);
  return 0.0;
}

__device__ __forceinline__ void store_token(TokenRow& p, int lane, double v, int64_t target) {
  if (lane == 0) p.target = target;
  if (lane < 6) p.f[lane] = (float)v;  // exact: v came from a float
  else if (lane < 10) p.d[lane - 6] = v;
  else if (lane < kTokenLanes) p.x[lane - 10] = (float)v;
}

// The call's per-token arrays as seen at index 0 of the read-ahead row (null stays null: an absent input).
__device__ __forceinline__ TokenInputs token_view(const TokenInputs& t, const TokenRow& p) {
  TokenInputs v;
  v.advantages = t.advantages ? &p.f[0] : nullptr;
  v.mask = t.mask ? &p.f[1] : nullptr;
  v.oldLogProbs = t.oldLogProbs ? &p.f[2] : nullptr;
  v.refLogProbs = t.refLogProbs ? &p.f[3] : nullptr;
  v.rolloutLogProbs = t.rolloutLogProbs ? &p.f[4] : nullptr;
  v.maskedLogProbs = t.maskedLogProbs ? &p.f[5] : nullptr;
  v.wAgg = t.wAgg ? &p.d[0] : nullptr;
  v.wEnt = t.wEnt ? &p.d[1] : nullptr;
  v.wKp = t.wKp ? &p.d[2] : nullptr;
  v.wSft = t.wSft ? &p.d[3] : nullptr;
  return v;
}

// Block 0's first warp, between the two cluster barriers: the row pair's totals, verdict, token terms and
// gradient coefficients, pushed into every block's K3Lead. Reads only this block's shared memory.
template <class SI>
__device__ void lead_row(const DeviceCall& c, K3Shared& sh, const typename SI::T* x, const typename SI::T* xm,
                         unsigned C) {
  const int64_t target = sh.pre.target;
  const int lane = threadIdx.x & 31;
  const unsigned q = lane & (kMaxCluster - 1);
  const int path = lane / kMaxCluster;  // lanes 0-7 path 0, 8-15 path 1; the rest stay empty
  OnlineSoftmax2 acc = OnlineSoftmax2::empty();
  if (q < C && (path == 0 || (path == 1 && xm))) acc = sh.part[q][path];
  // A fixed tree over the ranks ((0,1), (2,3), ... then their pairs), whatever block finished first: merge()
  // is symmetric, so both lanes of each step end with the same bits.
#pragma unroll
  for (int o = 1; o < kMaxCluster; o <<= 1) acc = OnlineSoftmax2::merge(acc, acc.shfl_xor(o));
  // Lanes 0 and 8 finish their path, lane 0 the row; the results go through shared memory (sh.out), not
  // registers, which keeps the token terms' doubles within the register budget.
  const bool leader = q == 0 && (path == 0 || (path == 1 && xm));
  if (lane == 0) sh.out = RowOut{};
  __syncwarp();
  float K = 0.f;
  if (leader) {
    const Stats2 st = finish_stats2<SI>(acc, path ? xm : x, c.V, c.invTau, sh.pre.x[path]);
    (path ? sh.out.ms : sh.out.s) = st.s;
    K = st.K;
  }
  __syncwarp();
  if (lane == 0) {
    RowOut& o = sh.out;
    o.lp = (double)o.s.targetScaled - o.s.lse;
    o.a = (double)o.ms.targetScaled - o.ms.lse;
    finish_row(c, ReadAhead{sh.pre}, o);
    sh.lead.status = o.status;
  }
  __syncwarp();
  const RowOut& o = sh.out;
  const float scale2 = c.invTau * kLog2e;
  if (leader)
    sh.lead.coef[path] = path ? grad_coef2(c.invTau, o.ms.entropy, K, o.t.gA, o.t.gHm, target, sh.pre.x[1] * scale2)
                              : grad_coef2(c.invTau, o.s.entropy, K, o.t.gLp, o.t.gH, target, sh.pre.x[0] * scale2);
  else if (lane == kMaxCluster && !xm)
    sh.lead.coef[1] = GradCoef2{};
  __syncwarp();
  // Lane q pushes it into block q (remote stores, ordered before the second cluster barrier's release).
  if (lane > 0 && (unsigned)lane < C) {
    const uint32_t* from = reinterpret_cast<const uint32_t*>(&sh.lead);
    uint32_t* to = reinterpret_cast<uint32_t*>(&map_shared_rank(&sh, (unsigned)lane)->lead);
#pragma unroll
    for (int w = 0; w < (int)(sizeof(K3Lead) / 4); ++w) to[w] = from[w];
  }
}

// nbuf 2: the next row pair's slices are on their way while this one is reduced and written (double buffering,
// where two row pairs' slices fit). nbuf 1: one buffer, streamed: each path's slice comes in kChunks chunks, and
// the thread that finishes a chunk's gradient last has the copy engine bring that chunk of the next row pair, so
// that the next row pair streams in while this one's gradient is written and its statistics start on the first
// chunk that has landed.
template <class SI, class SO>
__global__ void __launch_bounds__(kK3Threads, 1) papo_rows_k3(const DeviceCall c, const Chunk ch, const int64_t per,
                                                              const int nbuf) {
  using TI = typename SI::T;
  using TO = typename SO::T;
  const int64_t V = c.V;
  const unsigned rank = cluster_rank(), C = cluster_size();
  const int paths = c.hasMaskedLogits ? 2 : 1;
  const bool streamed = nbuf == 1;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, spare = (int)(blockDim.x >> 5) - 1;
  const bool lead = rank == 0 && warp == 0, reader = rank == 0 && warp == spare && lane < kTokenLanes;
  unsigned char* smem = dynamic_smem();
  // Buffer b's slice of path q (arithmetic, not an array: an indexed array would live in local memory).
  auto held = [&](int b, int q) { return reinterpret_cast<TI*>(smem + ((b % nbuf) * paths + q % paths) * per * 16); };
  K3Shared& sh = *reinterpret_cast<K3Shared*>(smem + nbuf * paths * per * 16);
  K3Shared* const sh0 = map_shared_rank(&sh, 0);  // block 0's, where the partials go
  auto row_of = [&](int q, int64_t r) { return static_cast<const TI*>(q ? ch.maskedLogits : ch.logits) + r * V; };
  if (threadIdx.x == 0)
    for (int u = 0; u < 2 * kChunks; ++u) mbar_init(&sh.mbar[u], 1), sh.drained[u] = 0;
  __syncthreads();
  unsigned parities = 0;  // double-buffered: bit b, the phase parity buffer b waits for next
  const int64_t clusters = gridDim.x / C, first = blockIdx.x / C;
  if (threadIdx.x == 0 && first < ch.rows) {
    if (!streamed) issue_slices<SI>(c, ch, first, per, rank, held(0, 0), held(0, 1), &sh.mbar[0]);
    else
      for (int q = 0; q < paths; ++q)
        for (int j = 0; j < kChunks; ++j)
          issue_chunk<SI>(row_of(q, first), V, per, rank, j, held(0, q), &sh.mbar[q * kChunks + j]);
  }
  // The sampled token of each row pair is read one row pair ahead: the read-ahead of its logit depends on it.
  int64_t target = reader && first < ch.rows ? c.tok.tokens[ch.rowBegin + first] : 0;
  for (int64_t k = 0, r = first; r < ch.rows; ++k, r += clusters) {
    const int b = streamed ? 0 : (int)(k & 1);
    const int64_t row = ch.rowBegin + r;
    const bool more = r + clusters < ch.rows;
    const int64_t next = reader && more ? c.tok.tokens[row + clusters] : 0;
    const TI* x = static_cast<const TI*>(ch.logits) + r * V;
    const TI* xm = c.hasMaskedLogits ? static_cast<const TI*>(ch.maskedLogits) + r * V : nullptr;
    const Slice s0 = slice_of<SI>(x, V, per, rank, streamed);
    const Slice s1 = xm ? slice_of<SI>(xm, V, per, rank, streamed) : Slice{};
    TI* held0 = held(b, 0);
    TI* held1 = held(b, 1);

    // 1. this row pair's slices (issued before the loop, or during the previous row pair), and the next one's
    const double token = reader ? read_token<SI>(c, row, lane, x, xm, target) : 0.0;
    if (!streamed) {
      mbar_wait(&sh.mbar[b], (parities >> b) & 1u);
      parities ^= 1u << b;
      // The other buffer was last read by the row pair before this one, which every thread has finished (the
      // fence and barrier that end each row pair): the copy engine may refill it now.
      if (threadIdx.x == 0 && more)
        issue_slices<SI>(c, ch, r + clusters, per, rank, held(b ^ 1, 0), held(b ^ 1, 1), &sh.mbar[b ^ 1]);
    }
    // Streamed: every chunk's barrier completes once per row pair.
    const unsigned phase = (unsigned)(k & 1);
    auto landed = [&](int q, int j) {
      if (streamed) mbar_wait(&sh.mbar[q * kChunks + j], phase);
    };
    // Streamed: this thread is done reading chunk j of path q; the last one to be has the copy engine refill it.
    auto drained = [&](int q, int j) {
      if (!streamed) return;
      const int u = q * kChunks + j;
      fence_proxy_async();  // this thread's reads of the chunk, before the copy engine's writes
      __threadfence_block();
      if (atomicAdd(&sh.drained[u], 1u) == blockDim.x - 1) {
        sh.drained[u] = 0;
        __threadfence_block();  // every other thread's reads of the chunk, before this thread's copy
        fence_proxy_async();
        if (more) issue_chunk<SI>(row_of(q, r + clusters), V, per, rank, j, held(0, q), &sh.mbar[u]);
      }
    };

    // 2. this block's statistics, per path, pushed into block 0
    const float scale2 = c.invTau * kLog2e;
    const bool last = rank == C - 1;
    const OnlineSoftmax2 mine0 = slice_stats<SI>(x, held0, s0, V, scale2, last, [&](int j) { landed(0, j); });
    const OnlineSoftmax2 mine1 =
        xm ? slice_stats<SI>(xm, held1, s1, V, scale2, last, [&](int j) { landed(1, j); }) : OnlineSoftmax2::empty();
    if (rank == 0 && warp == spare) {
      if (lane < kTokenLanes) store_token(sh.pre, lane, token, target);
      __syncwarp();
      if (lane == 0) {
        const TokenInputs v = token_view(c.tok, sh.pre);
        sh.pre.in = token_input(v, 0, 0.0, 0.0, 0.0, 0.0);
        sh.pre.maskedLp = RowInputsAt{v, 0}.maskedLogProb();
      }
    }
    const OnlineSoftmax2 p0 = block_merge(mine0, sh.scratch);
    OnlineSoftmax2 p1 = OnlineSoftmax2::empty();
    if (xm) p1 = block_merge(mine1, sh.scratch);
    if (threadIdx.x == 0) sh0->part[rank][0] = p0, sh0->part[rank][1] = p1;
    cluster_sync();

    // 3. block 0's first warp: the row pair's statistics, verdict, token terms and coefficients, to every block
    if (lead) lead_row<SI>(c, sh, x, xm, C);
    cluster_sync();

    // 4. both gradient rows, each block its slice; block 0's first warp writes the row's results
    const K3Lead L = sh.lead;  // into registers: the next row pair's push lands only after the next first barrier
    if (lead)
      for (int w = lane; w < (int)(sizeof(RowOut) / 8); w += 32)
        reinterpret_cast<uint64_t*>(c.out + row)[w] = reinterpret_cast<const uint64_t*>(&sh.out)[w];
    const bool ok = L.status == ROW_OK;  // cluster-uniform
    auto done0 = [&](int j) { drained(0, j); };
    auto done1 = [&](int j) { drained(1, j); };
    if (ok && ch.grad) slice_grad<SI, SO>(x, held0, static_cast<TO*>(ch.grad) + r * V, s0, V, L.coef[0], rank, C, per, done0);
    else for (int j = 0; j < s0.chunks; ++j) done0(j);
    if (xm) {
      if (ok && ch.maskedGrad)
        slice_grad<SI, SO>(xm, held1, static_cast<TO*>(ch.maskedGrad) + r * V, s1, V, L.coef[1], rank, C, per, done1);
      else for (int j = 0; j < s1.chunks; ++j) done1(j);
    }
    // 5. double-buffered: this block's reads of its held slices are done before the copy engine refills them.
    // (What block 0 pushed and was pushed for this row pair is safe without another cluster barrier: nothing is
    // pushed for the next row pair before every block has passed that row pair's first cluster barrier, and
    // every block read its K3Lead before it.)
    fence_proxy_async();
    __syncthreads();
    target = next;
  }
  cluster_sync();  // no block may exit while another could still write into or read its shared memory
}

// The cluster size, threads and vectors per block and the grid for this key, or false where k3 does not apply.
template <class SI, class SO>
bool shape_typed(const ShapeKey& key, const CudaTuning& tuning, LaunchShape& shape) {
  const DeviceFacts& f = device_facts(key.device);
  // The device must do clusters, and the kernel must be sm_90 machine code (not older PTX JIT-compiled for it).
  if (f.major < 9 || !f.clusterLaunch || kernel_binary_version(papo_rows_k3<SI, SO>) < 90) return false;
  const int64_t esz = (int64_t)dtype_bytes(key.dtype), perVec = 16 / esz;
  const int64_t groups = key.V / perVec;  // whole 16-byte groups per path
  const int paths = key.masked ? 2 : 1;
  // Double buffering where two row pairs fit in the cluster, else one; the fewest blocks that hold them. The
  // tuning may force either (PAPO_CUDA_CLUSTER, PAPO_CUDA_K3_BUFFERS: experiments and tests), or ask for one
  // buffer in blocks of 256 threads, two of them on each SM (PAPO_CUDA_K3_CO_RESIDENT=2).
  const bool coResident = tuning.k3CoResident == 2;
  const int threads = coResident ? kK3ThreadsCoResident : kK3Threads;
  for (int nbuf = coResident ? 1 : 2; nbuf >= 1; --nbuf) {
    if (tuning.k3Buffers && tuning.k3Buffers != nbuf) continue;
    for (int C = 1; C <= kMaxCluster; C *= 2) {
      if (tuning.cluster && tuning.cluster != C) continue;
      const int64_t per = (groups + C - 1) / C;
      const size_t smem = (size_t)(nbuf * paths * per * 16) + sizeof(K3Shared);
      if (smem > (size_t)f.optinSmem) continue;
      if (coResident && blocks_per_sm(papo_rows_k3<SI, SO>, key.device, threads, smem) < 2) continue;
      const int n = max_active_clusters(papo_rows_k3<SI, SO>, dim3(threads), smem, (unsigned)C);
      if (n <= 0) continue;
      // As many clusters as run at once (a grid of more would leave the rest waiting for whole clusters to end);
      // tuning.blocks caps the blocks (tests use it to give each cluster several row pairs).
      int64_t clusters = n;
      if (tuning.blocks > 0) clusters = std::min<int64_t>(clusters, tuning.blocks / C);
      shape.blocks = (int)(std::max<int64_t>(1, clusters) * C);
      shape.cluster = C;
      shape.per = per;
      shape.buffers = nbuf;
      shape.smem = smem;
      shape.threads = threads;
      return true;
    }
  }
  return false;
}

template <class SI, class SO>
void launch_k3(const DeviceCall& c, const Chunk& ch, cudaStream_t stream) {
  const LaunchShape& p = c.launch;
  // never more clusters than rows
  const int64_t clusters = std::max<int64_t>(1, std::min<int64_t>(ch.rows, p.blocks / p.cluster));
  launch_kernel_cluster("papo_rows_k3", papo_rows_k3<SI, SO>, dim3((unsigned)(clusters * p.cluster)), dim3(p.threads),
                        p.smem, stream, (unsigned)p.cluster, c, ch, p.per, p.buffers);
}

}  // namespace

bool shape_k3(const ShapeKey& key, const CudaTuning& tuning, LaunchShape& shape) {
  return with_types(key.dtype, key.gradType, [&](auto si, auto so) {
    return shape_typed<decltype(si), decltype(so)>(key, tuning, shape);
  });
}

// The plan gives k3 forward + backward calls only (one pass per row pair holds no row back for a check).
void run_rows_k3(const DeviceCall& c, const Chunk& ch, int32_t phase, cudaStream_t stream) {
  if (phase != PHASE_BOTH)
    throw Error(ErrorCode::Internal, "k3 runs forward and backward together, got phase " + std::to_string(phase));
  with_types(c.dtype, c.gradType, [&](auto si, auto so) {
    launch_k3<decltype(si), decltype(so)>(c, ch, stream);
    return 0;
  });
}

}  // namespace cuda
}  // namespace papo
