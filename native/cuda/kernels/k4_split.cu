// k4 (KERNEL_K4_SPLIT): split rows. Each row pair is cut into slices of a fixed column range, and a slice of
// both paths is the unit of work of a block, so that what is in flight is a few slices per block (17 MB on an
// H100 whatever V is: 264 blocks x 2 items x 32 KB) and the gradient pass re-reads its slice from L2. k2's one
// block per row pair keeps ~132 whole row pairs in flight (80 MB in bf16) against a 50 MB L2: its second read
// misses.
//
// Work items are (row, slice) pairs, handed out in order by a ticket counter. For each item a block
//   1. reads its slice of both rows for the online-softmax partials (m, s, t) per path, stores them, and counts
//      itself in the row's arrival counter;
//   2. if it arrived last, merges the row's partials in slice order (a fixed order: the same bits whoever
//      arrived when), computes the statistics, the verdict (NaN / +Infinity from the totals) and the token
//      terms (token_terms() in doubles, row_terms.cuh), writes the row's RowOut and raises its ready flag;
//   3. later, once the flag is up, re-reads its slice and writes both gradient slices (evict-first stores).
// The math per element is k1/k2's (row_block.cuh): ftz exponentials, fp32 partials, doubles per row.
//
// Forward progress without co-residency. A block holds back the gradient of an item until every item of its
// row has been handed out (the ticket it holds is past the row), and only then may it wait for the row's flag.
// Every item handed out is held by a block that is running, and a block does the statistics of the ticket it
// holds before any wait of its own; that wait is again on a row whose items are all handed out, below the
// ticket. So the lowest unfinished statistics always progress, the last of a row's arrivals publishes the row
// without waiting on anything, and no block waits for one that has not started: the grid may be larger than
// what the device runs at once, other work may share the device, and the emulator may run one block at a time.
// While the oldest held-back row is not published yet, a block does the statistics of its next item instead of
// spinning, up to kLag items held back (the flag is usually up within one item: the merge is short).
//
// Batch invariance: slice s is the groups [s P, (s + 1) P) of U = 16 bytes' worth of columns, P a function of V
// and the dtype alone; within a slice thread t sums groups t + k kK4Threads of each step of kStep groups, in
// that order, and the last slice also the V mod U tail columns; the warp, block and row reductions are fixed
// trees. Nothing depends on which block took which item, the grid, the chunks or the row's address (unaligned
// rows load the same groups element by element).
//
// Written for the emulated device first (tools/cuda-emulator runs a grid's blocks on several OS threads): not
// yet measured on a GPU.
#include <stdlib.h>

#include <algorithm>

#include "cuda/cuda_resources.h"
#include "cuda/device_call.h"
#include "cuda/device_facts.h"
#include "cuda/device_prims.cuh"
#include "cuda/launch.cuh"
#include "cuda/papo_cuda.h"
#include "cuda/stream_memory.h"
#include "row_block.cuh"
#include "row_terms.cuh"

namespace papo {
namespace cuda {

namespace {

// 256 threads a block, 2 blocks an SM (the grid is that many), 4 groups of 16 bytes per thread and path per
// item: an item is 16 KB of each path, two items per block in flight (the one reduced, the one whose gradient
// comes next), and each thread has 64 bf16 elements of work per item against the item's fixed cost (its
// reductions and bookkeeping). Fewer threads doing more each than k2's 2 x 512: the same bytes in flight per SM,
// half the fixed cost per element, and up to 128 registers a thread, so the token terms fit without spilling.
constexpr int kK4Threads = 256;
constexpr int kK4BlocksPerSm = 2;
constexpr int kGroups = 4;                            // per thread and path in a step
constexpr int64_t kStep = (int64_t)kGroups * kK4Threads;  // groups per step of a slice
constexpr int64_t kMaxSlices = 128;                   // per row: longer rows get longer slices
constexpr int kLag = 3;                               // items a block holds back while their rows complete
constexpr int kQueue = 256;                           // > kMaxSlices + kLag: the most a block holds back
static_assert(kK4Threads % 32 == 0 && kK4Threads <= 32 * 32, "whole warps, whose totals one warp reduces");

// What one launch of k4 works with: the slicing of a row, and its scratch (stream-ordered, counters zeroed).
struct K4Plan {
  int64_t slices;  // S per row
  int64_t per;     // groups per slice
  int64_t items;   // rows x S
  unsigned long long* ticket;
  uint32_t* arrived;  // per row: items whose partials are stored
  uint32_t* ready;    // per row: 1 once its RowOut is written
  float4* part;       // per row and slice, both paths: (m, s, t)
};

// Both paths' accumulators.
struct PathPair {
  OnlineSoftmax p0, p1;
  static __device__ __forceinline__ PathPair empty() { return PathPair{OnlineSoftmax::empty(), OnlineSoftmax::empty()}; }
};

__device__ __forceinline__ float4 packed(const OnlineSoftmax& a) { return float4{a.m, a.s, a.t, 0.f}; }
__device__ __forceinline__ OnlineSoftmax unpacked(const float4& v) { return OnlineSoftmax{v.x, v.y, v.z}; }

// A warp's accumulators reduced at once, the max first and then the sums rescaled to it: one exponential a lane
// instead of one a butterfly step (the merge's pairwise rescaling, row_block.cuh), which k4 would pay per item.
// Sums by butterfly, so every lane ends with the same bits. A NaN stays in s; +Infinity in m makes s or t NaN.
__device__ __forceinline__ OnlineSoftmax warp_total(const OnlineSoftmax& a) {
  float M = a.m;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
  float s = a.s, t = 0.f;  // a lane that saw nothing finite adds its s (0, or NaN) and nothing else
  if (a.m != -INFINITY) {
    const float d = a.m - M, f = NaturalUnits::rescale(d);
    s = f * a.s;
    t = f * a.t + (f * d) * a.s;  // as in the merge: never d * s, which overflows for a huge gap
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_xor_sync(0xffffffffu, s, o);
    t += __shfl_xor_sync(0xffffffffu, t, o);
  }
  return OnlineSoftmax{M, s, t};
}

// The columns of slice s: groups [g0, g1), and the tail columns [tail, V) when it is the last.
struct SliceCols {
  int64_t g0, g1, tail;
  bool last;
};

__device__ __forceinline__ SliceCols slice_cols(const K4Plan& p, int64_t s, int64_t V, int U) {
  const int64_t nvec = V / U;
  SliceCols c;
  c.g0 = s * p.per;
  c.g1 = c.g0 + p.per < nvec ? c.g0 + p.per : nvec;
  c.last = s == p.slices - 1;
  c.tail = nvec * U;
  return c;
}

// This thread's groups of one step of a slice, in storage form: groups ga + k * kK4Threads, all of them (whole)
// or those below g1 (the slice's last step).
template <class S, bool whole>
__device__ __forceinline__ void load_step(uint4 (&raw)[kGroups], const typename S::T* row, int64_t ga, int64_t g1,
                                          bool vec) {
#pragma unroll
  for (int k = 0; k < kGroups; ++k)
    if (whole || ga + k * kK4Threads < g1) raw[k] = load_group<S>(row + (ga + k * kK4Threads) * S::kVec, vec);
}

template <class S, bool whole>
__device__ __forceinline__ void add_step(OnlineSoftmax& st, const uint4 (&raw)[kGroups], int64_t ga, int64_t g1,
                                         float invTau) {
#pragma unroll
  for (int k = 0; k < kGroups; ++k)
    if (whole || ga + k * kK4Threads < g1) {
      float x[S::kVec];
      to_floats<S>(raw[k], invTau, x);
      st.add(x);
    }
}

template <class S, bool whole>
__device__ __forceinline__ void stats_step(PathPair& st, const typename S::T* x, const typename S::T* xm, bool vx,
                                           bool vm, int64_t ga, int64_t g1, float invTau) {
  uint4 r0[kGroups], r1[kGroups];  // both paths' loads in flight together
  load_step<S, whole>(r0, x, ga, g1, vx);
  if (xm) load_step<S, whole>(r1, xm, ga, g1, vm);
  add_step<S, whole>(st.p0, r0, ga, g1, invTau);
  if (xm) add_step<S, whole>(st.p1, r1, ga, g1, invTau);
}

template <class S>
__device__ __forceinline__ void add_tail(OnlineSoftmax& st, const typename S::T* row, const SliceCols& sc, int64_t V,
                                         float invTau) {
  if (sc.last)
    for (int64_t j = sc.tail + threadIdx.x; j < V; j += kK4Threads) {
      const float x[1] = {S::to_float(row[j]) * invTau};
      st.add(x);
    }
}

// This thread's part of the slice's statistics of both paths (xm null: one path).
template <class S>
__device__ PathPair slice_stats(const typename S::T* x, const typename S::T* xm, const SliceCols& sc, int64_t V,
                                float invTau) {
  PathPair st = PathPair::empty();
  const bool vx = aligned16(x), vm = xm && aligned16(xm);  // block-uniform
  int64_t ga = sc.g0 + threadIdx.x;
  for (; ga + (kGroups - 1) * kK4Threads < sc.g1; ga += kStep) stats_step<S, true>(st, x, xm, vx, vm, ga, sc.g1, invTau);
  if (ga < sc.g1) stats_step<S, false>(st, x, xm, vx, vm, ga, sc.g1, invTau);
  add_tail<S>(st.p0, x, sc, V, invTau);
  if (xm) add_tail<S>(st.p1, xm, sc, V, invTau);
  return st;
}

template <class SI, class SO, bool whole>
__device__ __forceinline__ void grad_step(const typename SI::T* row, typename SO::T* out, bool vec, bool outVec,
                                          int64_t ga, int64_t g1, const GradCoef& c) {
  uint4 raw[kGroups];
  load_step<SI, whole>(raw, row, ga, g1, vec);
#pragma unroll
  for (int k = 0; k < kGroups; ++k)
    if (whole || ga + k * kK4Threads < g1) grad_group<SI, SO>(raw[k], out + (ga + k * kK4Threads) * SI::kVec, outVec, c);
}

// This block's slice of one gradient row; every thread calls it (the owner of the sampled token ends with a
// barrier). row and out are separate: k4 runs forward + backward out of place only.
template <class SI, class SO>
__device__ void slice_grad(const typename SI::T* row, typename SO::T* out, const SliceCols& sc, int64_t V,
                           const GradCoef& c) {
  constexpr int U = SI::kVec;
  const int64_t lo = sc.g0 * U, hi = sc.last ? V : sc.g1 * U;
  if (c.a == 0.f && c.b == 0.f) return block_zero<SO>(out, lo, hi);
  const bool vec = aligned16(row), outVec = aligned16(out);  // block-uniform
  int64_t ga = sc.g0 + threadIdx.x;
  for (; ga + (kGroups - 1) * kK4Threads < sc.g1; ga += kStep) grad_step<SI, SO, true>(row, out, vec, outVec, ga, sc.g1, c);
  if (ga < sc.g1) grad_step<SI, SO, false>(row, out, vec, outVec, ga, sc.g1, c);
  if (sc.last)
    for (int64_t j = sc.tail + threadIdx.x; j < V; j += kK4Threads)
      out[j] = SO::from_float(grad_of(c, SI::to_float(row[j]) * c.invTau));
  if (c.target >= lo && c.target < hi) {  // block-uniform
    __syncthreads();  // the plain value at the target is written; replace it with the one-hot version
    if (threadIdx.x == 0) out[c.target] = target_grad<SO>(c);
  }
}

// The last arrival of row r (chunk-local), warp 0: the partials merged in slice order, each path's statistics
// by a lane of its own, the verdict and token terms by lane 0, written into o (shared memory: the token terms
// need many registers, so their inputs and outputs stay there), then copied out and the row published.
template <class SI>
__device__ void publish_row(const DeviceCall& c, const Chunk& ch, const K4Plan& p, int64_t r, RowOut& o) {
  using TI = typename SI::T;
  constexpr int kWords = (int)(sizeof(RowOut) / 8);
  static_assert(sizeof(RowOut) % 8 == 0 && kWords <= 32, "a word of RowOut per lane");
  const int lane = threadIdx.x & 31;
  unsigned long long* words = reinterpret_cast<unsigned long long*>(&o);
  if (lane < kWords) words[lane] = 0;  // RowOut{}: what finish_row() leaves alone stays zero
  __syncwarp();     // zeroed before lanes 0 and 1 write their paths over it
  __threadfence();  // after the counter said every partial is in: read them as they are now
  PathPair acc = PathPair::empty();
  const float4* part = p.part + r * p.slices * 2;
  for (int64_t q = lane; q < p.slices; q += 32) {  // slices lane, lane + 32, ...: a fixed order
    acc.p0 = OnlineSoftmax::merge(acc.p0, unpacked(load_cg(part + 2 * q)));
    acc.p1 = OnlineSoftmax::merge(acc.p1, unpacked(load_cg(part + 2 * q + 1)));
  }
  acc.p0 = warp_total(acc.p0);
  acc.p1 = warp_total(acc.p1);
  const int64_t row = ch.rowBegin + r, V = c.V;
  if (lane < (c.hasMaskedLogits ? 2 : 1)) {
    const TI* x = static_cast<const TI*>(lane ? ch.maskedLogits : ch.logits) + r * V;
    OnlineSoftmax tot = acc.p0;  // by value: a selected reference would live in local memory
    if (lane) tot = acc.p1;
    const RowStats st = finish_stats<SI>(tot, x, V, c.tok.tokens[row], c.invTau);
    const double lp = (double)st.targetScaled - st.lse;
    if (lane) {
      o.ms = st;
      o.a = lp;
    } else {
      o.s = st;
      o.lp = lp;
    }
  }
  __syncwarp();
  if (lane == 0) finish_row(c, row, o);
  __syncwarp();
  if (lane < kWords) reinterpret_cast<unsigned long long*>(c.out + row)[lane] = words[lane];
  __threadfence();
  __syncwarp();
  if (lane == 0) store_release(p.ready + r, 1u);
}

// The block's state, in shared memory: thread 0 writes it before a barrier, every thread reads it after.
struct K4Shared {
  PathPair warp[kK4Threads / 32];  // the warps' statistics of the item
  int64_t queue[kQueue];  // items whose gradients are held back, oldest first: [head, head + held) mod kQueue
  int64_t t;              // the ticket held: the item whose statistics come next
  int head, held;
  int last;  // the item just reduced was its row's last arrival: warp 0 publishes row `reduced`
  int64_t reduced;
  int go;          // the oldest held-back row is published; its verdict and gradient coefficients:
  int32_t status;
  GradCoef coef[2];
  RowOut row, pub;  // thread 0's copy of that row's results; the row warp 0 publishes
};

template <class SI, class SO>
__global__ void __launch_bounds__(kK4Threads, kK4BlocksPerSm) papo_rows_k4(const DeviceCall c, const Chunk ch,
                                                                           const K4Plan p) {
  using TI = typename SI::T;
  using TO = typename SO::T;
  constexpr int U = SI::kVec;
  __shared__ K4Shared sh;
  const int64_t V = c.V, S = p.slices;
  const bool tid0 = threadIdx.x == 0;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (tid0) {
    sh.t = (int64_t)atomicAdd(p.ticket, 1ull);
    sh.head = sh.held = 0;
  }
  __syncthreads();
  // Each round: the gradients of the oldest held-back item, once every item of its row is handed out and the
  // row is published (not published yet: no gradients this round, unless kLag are held back or no item is left
  // to reduce: then wait), then the statistics of the next item.
  for (;;) {
    const int64_t t = sh.t;
    if (sh.held > 0) {
      const int64_t f = sh.queue[sh.head], r = f / S;
      if (t >= p.items || (r + 1) * S <= t) {
        if (tid0) {
          const bool wait = t >= p.items || sh.held >= kLag;
          bool up = load_acquire(p.ready + r) != 0;
          while (!up && wait) {
            spin_pause();
            up = load_acquire(p.ready + r) != 0;
          }
          sh.go = up;
          if (up) {  // word by word from L2 (an L1 line may hold a neighbour row's stale bytes)
            const unsigned long long* src = reinterpret_cast<const unsigned long long*>(c.out + ch.rowBegin + r);
            unsigned long long* dst = reinterpret_cast<unsigned long long*>(&sh.row);
            for (int k = 0; k < (int)(sizeof(RowOut) / 8); ++k) dst[k] = load_cg(src + k);
            const RowOut& o = sh.row;
            const int64_t target = c.tok.tokens[ch.rowBegin + r];
            sh.status = o.status;
            sh.coef[0] = grad_coef(c.invTau, o.s, o.t.gLp, o.t.gH, target);
            sh.coef[1] = grad_coef(c.invTau, o.ms, o.t.gA, o.t.gHm, target);
          }
        }
        __syncthreads();
        if (tid0 && sh.go) {  // after the barrier: every thread has read the queue's state for this round
          sh.head = (sh.head + 1) % kQueue;
          --sh.held;
        }
        if (sh.go && sh.status == ROW_OK) {  // block-uniform: shared
          const SliceCols sc = slice_cols(p, f - r * S, V, U);
          const GradCoef c0 = sh.coef[0], c1 = sh.coef[1];  // into registers, out of the loops
          if (ch.grad)
            slice_grad<SI, SO>(static_cast<const TI*>(ch.logits) + r * V, static_cast<TO*>(ch.grad) + r * V, sc, V, c0);
          if (ch.maskedGrad)
            slice_grad<SI, SO>(static_cast<const TI*>(ch.maskedLogits) + r * V, static_cast<TO*>(ch.maskedGrad) + r * V,
                               sc, V, c1);
        }
      }
    }
    if (t >= p.items) {  // only held-back gradients are left
      __syncthreads();   // the queue's state is read after thread 0 wrote it; sh.go and sh.coef are rewritten next
      if (sh.held == 0) break;
      continue;
    }
    // The statistics of item t, the next ticket on its way meanwhile: the warps' totals, then warp 0's. (Its
    // barriers also end this round's gradients before thread 0 rewrites their coefficients.)
    unsigned long long next = 0;
    if (tid0) next = atomicAdd(p.ticket, 1ull);
    const int64_t r = t / S, s = t - r * S;
    const TI* xm = c.hasMaskedLogits ? static_cast<const TI*>(ch.maskedLogits) + r * V : nullptr;
    PathPair st = slice_stats<SI>(static_cast<const TI*>(ch.logits) + r * V, xm, slice_cols(p, s, V, U), V, c.invTau);
    st.p0 = warp_total(st.p0);
    st.p1 = warp_total(st.p1);
    if (lane == 0) sh.warp[warp] = st;
    __syncthreads();
    if (warp == 0) {
      st = lane < kK4Threads / 32 ? sh.warp[lane] : PathPair::empty();
      st.p0 = warp_total(st.p0);
      st.p1 = warp_total(st.p1);
      if (tid0) {
        float4* part = p.part + (r * S + s) * 2;
        part[0] = packed(st.p0);
        part[1] = packed(st.p1);
        __threadfence();  // the partials before the count that lets the last arrival read them
        sh.last = atomicAdd(p.arrived + r, 1u) == (uint32_t)(S - 1);
        sh.reduced = r;
        sh.queue[(sh.head + sh.held) % kQueue] = t;
        ++sh.held;
        sh.t = (int64_t)next;
      }
    }
    __syncthreads();
    if (sh.last && warp == 0) publish_row<SI>(c, ch, p, sh.reduced, sh.pub);
    // No barrier here: the state and sh.warp are next written after the barriers of the next round.
  }
}

// The slicing of a row of V columns of esz bytes: one step, 16 KB a path (tuning.k4Slice groups instead,
// PAPO_CUDA_K4_SLICE: short slices for the tests' short rows, longer ones to time), longer where the row would
// need more than kMaxSlices. Its groups per slice, from which the launch takes the slices.
int64_t slice_groups(int64_t V, int64_t esz, int64_t forced) {
  const int64_t nvec = V / (16 / esz);
  const int64_t step = forced > 0 ? forced : kStep;
  const int64_t steps = std::max<int64_t>(1, (nvec + step * kMaxSlices - 1) / (step * kMaxSlices));
  return step * steps;
}

template <class SI, class SO>
void launch_k4(const DeviceCall& c, const Chunk& ch, cudaStream_t stream) {
  K4Plan p;
  p.per = c.launch.per;
  p.slices = std::max<int64_t>(1, (c.V / (16 / (int64_t)dtype_bytes(c.dtype)) + p.per - 1) / p.per);
  p.items = ch.rows * p.slices;
  // [ticket | arrived x rows | ready x rows] zeroed, then the partials (written before they are read).
  const size_t counters = 16 + (size_t)ch.rows * 8, partOffset = (counters + 15) & ~(size_t)15;
  StreamBuffer scratch(partOffset + (size_t)p.items * 2 * sizeof(float4), stream, "kernel k4's partials and counters");
  char* base = scratch.as<char>();
  p.ticket = reinterpret_cast<unsigned long long*>(base);
  p.arrived = reinterpret_cast<uint32_t*>(base + 16);
  p.ready = p.arrived + ch.rows;
  p.part = reinterpret_cast<float4*>(base + partOffset);
  cuda_check(cudaMemsetAsync(base, 0, counters, stream), "cudaMemsetAsync (kernel k4's counters)");
  const int64_t blocks = std::min<int64_t>(p.items, std::max(c.launch.blocks, 1));
  launch_kernel("papo_rows_k4", papo_rows_k4<SI, SO>, dim3((unsigned)blocks), dim3(kK4Threads), 0, stream, c, ch, p);
}  // the scratch is freed in stream order, after the kernel

// The instance for these dtypes: the kernel and its launch.
template <class F>
auto with_k4(int32_t dtype, int32_t gradType, F&& f) {
  return with_types(dtype, gradType, [&](auto si, auto so) {
    using SI = decltype(si);
    using SO = decltype(so);
    return f(papo_rows_k4<SI, SO>, launch_k4<SI, SO>);
  });
}

using Kernel = void (*)(DeviceCall, Chunk, K4Plan);
using Launch = void (*)(const DeviceCall&, const Chunk&, cudaStream_t);

}  // namespace

void run_rows_k4(const DeviceCall& c, const Chunk& ch, int32_t phase, cudaStream_t stream) {
  // One pass of forward + backward is what k4 is for; the plan runs the flows whose phases are apart as k1.
  if (phase != PHASE_BOTH) throw Error(ErrorCode::Internal, "k4 runs forward and backward in one pass only");
  with_k4(c.dtype, c.gradType, [&](Kernel, Launch run) {
    run(c, ch, stream);
    return 0;
  });
}

bool shape_k4(const ShapeKey& key, const CudaTuning& tuning, LaunchShape& shape) {
  shape.per = slice_groups(key.V, (int64_t)dtype_bytes(key.dtype), tuning.k4Slice);
  if (tuning.blocks) {
    shape.blocks = tuning.blocks;
    return true;
  }
  const int dev = key.device;
  const int perSm = with_k4(key.dtype, key.gradType, [&](Kernel k, Launch) { return blocks_per_sm(k, dev, kK4Threads); });
  // Two blocks an SM where they fit (the items in flight are sized for that), as many as run at once: more
  // would only wait for a free slot (tickets, not block ids, order the work).
  shape.blocks = device_facts(dev).sms * std::max(std::min(perSm, kK4BlocksPerSm), 1);
  return true;
}

}  // namespace cuda
}  // namespace papo
