// k3 (KERNEL_K3_CLUSTER, sm_90+): each row pair held on chip by a thread-block cluster, so every logits element is
// read from memory once and every gradient element written once (k2 reads each row twice and relies on L2 for
// the second read, which does not hold 132 row pairs of 608 KB).
//
// Per row pair, each of the C blocks of a cluster:
//   1. has the copy engine bring its slice of both rows (16-byte vectors; cp.async.bulk into shared memory,
//      completing on an mbarrier), while its threads read the few unaligned head / tail elements directly;
//   2. reduces its slice's online-softmax statistics (m, s, t) per path and publishes them in shared memory;
//   3. cluster barrier; block 0 merges the C partials in rank order through distributed shared memory, computes
//      the token terms (token_terms() in doubles, as everywhere) and publishes the gradient coefficients;
//   4. cluster barrier; every block reads them from block 0 and writes its slice of both gradient rows from
//      its shared-memory copy, with streaming 16-byte stores; the sampled token's one-hot term last;
//   5. a block barrier (and a proxy fence) before the copy engine refills the block's slices; one cluster barrier
//      at the end, since no block may exit while another could still read its shared memory.
// Per element, the math is in base 2 with the scale folded in and no NaN / +Infinity test (row_base2.cuh).
// While a row pair is reduced and written, the next one's slices are already coming (two buffers, where they fit).
// The cluster size is the smallest of 1, 2, 4, 8 whose slices fit in a block's shared memory (227 KB), or
// PAPO_CUDA_CLUSTER (shape_k3, asked once per shape by the plan); where none fits, or before sm_90, the plan runs
// k2, and for a phase other than forward + backward, k1 (plan.cu).
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

constexpr int kK3Threads = 512;
static_assert(kK3Threads == kThreads, "the block reductions' scratch (StatsScratch2) is sized for kThreads");
constexpr int kMaxCluster = 8;  // the portable cluster size

// What a block publishes for the cluster (at the end of its dynamic shared memory).
struct K3Shared {
  StatsScratch2 scratch;    // the block's own reductions
  OnlineSoftmax2 part[2];   // this block's slice statistics, per path (base 2, row_base2.cuh)
  GradCoef2 coef[2];        // block 0's: the gradient coefficients of the row pair
  int32_t status;           // block 0's: the row's verdict
  uint64_t mbar[2];         // per buffer: completes when this block's slices have landed
};

__device__ __forceinline__ int64_t lmin(int64_t a, int64_t b) { return a < b ? a : b; }

// The 16-byte vectors of one path's row that a block holds: row = head scalars, nvec vectors, tail scalars.
struct Slice {
  int64_t head, nvec, v0, v1;  // this block's vectors [v0, v1)
};

template <class S>
__device__ __forceinline__ Slice slice_of(const typename S::T* row, int64_t V, int64_t per, unsigned rank) {
  Slice s;
  s.head = head_elems(row, V);
  s.nvec = (V - s.head) / S::kVec;
  s.v0 = lmin(s.nvec, (int64_t)rank * per);
  s.v1 = lmin(s.nvec, s.v0 + per);
  return s;
}

// Statistics of this block's part of one path: its vectors from shared memory, and (block 0 / the last block)
// the unaligned head / tail elements from global memory.
template <class S>
__device__ OnlineSoftmax2 slice_stats(const typename S::T* row, const typename S::T* held, const Slice& sl, int64_t V,
                                      float scale2, unsigned rank, unsigned C) {
  constexpr int U = S::kVec;
  OnlineSoftmax2 st = OnlineSoftmax2::empty();
  const int64_t tid = threadIdx.x, nt = blockDim.x;
  if (rank == 0)
    for (int64_t j = tid; j < sl.head; j += nt) {
      const float x[1] = {S::to_float(row[j]) * scale2};
      st.add(x);
    }
  if (rank == C - 1)
    for (int64_t j = sl.head + sl.nvec * U + tid; j < V; j += nt) {
      const float x[1] = {S::to_float(row[j]) * scale2};
      st.add(x);
    }
  for (int64_t v = tid; v < sl.v1 - sl.v0; v += nt) {
    float x[U];
    load_vec<S>(held + v * U, scale2, x);
    st.add(x);
  }
  return st;
}

// This block's part of one gradient row, from the held copy (so in place is safe), then the one-hot term by
// the block that holds the sampled token. Every thread of the block calls it.
template <class SI, class SO>
__device__ void slice_grad(const typename SI::T* row, const typename SI::T* held, typename SO::T* out, const Slice& sl,
                           int64_t V, const GradCoef2& g2, unsigned rank, unsigned C, int64_t per) {
  constexpr int U = SI::kVec;
  const int64_t tid = threadIdx.x, nt = blockDim.x;
  if (g2.a == 0.f && g2.b == 0.f) {  // no loss on this token, or a detached path: exact zeros
    const int64_t lo = rank == 0 ? 0 : sl.head + sl.v0 * U;
    const int64_t hi = rank == C - 1 ? V : sl.head + sl.v1 * U;
    for (int64_t j = lo + tid; j < hi; j += nt) out[j] = SO::from_float(0.f);
    return;
  }
  if (rank == 0)
    for (int64_t j = tid; j < sl.head; j += nt) out[j] = SO::from_float(grad_of2(g2, SI::to_float(row[j]) * g2.scale2));
  if (rank == C - 1)
    for (int64_t j = sl.head + sl.nvec * U + tid; j < V; j += nt)
      out[j] = SO::from_float(grad_of2(g2, SI::to_float(row[j]) * g2.scale2));
  typename SO::T* obody = out + sl.head + sl.v0 * U;
  const bool outVec = (reinterpret_cast<uintptr_t>(out + sl.head) & 15) == 0;  // block-uniform
  for (int64_t v = tid; v < sl.v1 - sl.v0; v += nt) {
    float x[U], gr[U];
    load_vec<SI>(held + v * U, g2.scale2, x);
#pragma unroll
    for (int k = 0; k < U; ++k) gr[k] = grad_of2(g2, x[k]);
    if (outVec) {
      constexpr int per16 = 16 / sizeof(typename SO::T);
#pragma unroll
      for (int w = 0; w < U / per16; ++w) {
        Vec16<SO> o;
#pragma unroll
        for (int k = 0; k < per16; ++k) o.e[k] = SO::from_float(gr[w * per16 + k]);
        store16_streaming(obody + v * U + w * per16, o.raw);
      }
    } else {
#pragma unroll
      for (int k = 0; k < U; ++k) obody[v * U + k] = SO::from_float(gr[k]);
    }
  }
  __syncthreads();  // the slice is written; the owner of the sampled token replaces it with the one-hot value
  const int64_t t = g2.target;
  const bool inBody = t >= sl.head && t < sl.head + sl.nvec * U;
  const unsigned owner = t < sl.head ? 0 : inBody ? (unsigned)lmin(C - 1, (t - sl.head) / U / per) : C - 1;
  if (rank == owner && threadIdx.x == 0) out[t] = SO::from_float(g2.a + grad_of2(g2, g2.target2));
}

// Thread 0 has the copy engine bring this block's slices of row pair r (chunk-local) into buffer b.
template <class SI>
__device__ void issue_slices(const DeviceCall& c, const Chunk& ch, int64_t r, int64_t per, unsigned rank,
                             typename SI::T* held0, typename SI::T* held1, uint64_t* bar) {
  using TI = typename SI::T;
  constexpr int U = SI::kVec;
  const int64_t V = c.V;
  const TI* x = static_cast<const TI*>(ch.logits) + r * V;
  const TI* xm = c.hasMaskedLogits ? static_cast<const TI*>(ch.maskedLogits) + r * V : nullptr;
  const Slice s0 = slice_of<SI>(x, V, per, rank);
  const Slice s1 = xm ? slice_of<SI>(xm, V, per, rank) : Slice{};
  const unsigned b0 = (unsigned)((s0.v1 - s0.v0) * 16), b1 = (unsigned)((s1.v1 - s1.v0) * 16);
  mbar_arrive_expect_tx(bar, b0 + b1);
  if (b0) bulk_copy_g2s(held0, x + s0.head + s0.v0 * U, b0, bar);
  if (b1) bulk_copy_g2s(held1, xm + s1.head + s1.v0 * U, b1, bar);
}

// nbuf 2: the next row pair's slices are on their way while this one is reduced and written (double buffering,
// where two row pairs' slices fit); nbuf 1: one row pair at a time.
template <class SI, class SO>
__global__ void __launch_bounds__(kK3Threads, 1) papo_rows_k3(const DeviceCall c, const Chunk ch, const int64_t per,
                                                              const int nbuf) {
  using TI = typename SI::T;
  using TO = typename SO::T;
  const int64_t V = c.V;
  const unsigned rank = cluster_rank(), C = cluster_size();
  const int paths = c.hasMaskedLogits ? 2 : 1;
  unsigned char* smem = dynamic_smem();
  // Buffer b's slice of path q (arithmetic, not an array: an indexed array would live in local memory).
  auto held = [&](int b, int q) { return reinterpret_cast<TI*>(smem + ((b % nbuf) * paths + q % paths) * per * 16); };
  K3Shared& sh = *reinterpret_cast<K3Shared*>(smem + nbuf * paths * per * 16);
  if (threadIdx.x == 0)
    for (int b = 0; b < nbuf; ++b) mbar_init(&sh.mbar[b], 1);
  __syncthreads();
  unsigned parities = 0;  // bit b: the phase parity buffer b waits for next
  const int64_t clusters = gridDim.x / C, first = blockIdx.x / C;
  if (threadIdx.x == 0 && first < ch.rows) issue_slices<SI>(c, ch, first, per, rank, held(0, 0), held(0, 1), &sh.mbar[0]);
  for (int64_t k = 0, r = first; r < ch.rows; ++k, r += clusters) {
    const int b = nbuf == 2 ? (int)(k & 1) : 0;
    const int64_t row = ch.rowBegin + r;
    const int64_t target = c.tok.tokens[row];
    const TI* x = static_cast<const TI*>(ch.logits) + r * V;
    const TI* xm = c.hasMaskedLogits ? static_cast<const TI*>(ch.maskedLogits) + r * V : nullptr;
    const Slice s0 = slice_of<SI>(x, V, per, rank);
    const Slice s1 = xm ? slice_of<SI>(xm, V, per, rank) : Slice{};
    TI* held0 = held(b, 0);
    TI* held1 = held(b, 1);

    // 1. this row pair's slices (issued before the loop, or during the previous row pair), and the next one's
    if (threadIdx.x == 0 && nbuf == 1 && k > 0) issue_slices<SI>(c, ch, r, per, rank, held0, held1, &sh.mbar[0]);
    mbar_wait(&sh.mbar[b], (parities >> b) & 1u);
    parities ^= 1u << b;
    // The other buffer was last read by the row pair before this one, which every thread has finished (the
    // fence and barrier that end each row pair): the copy engine may refill it now.
    if (threadIdx.x == 0 && nbuf == 2 && r + clusters < ch.rows)
      issue_slices<SI>(c, ch, r + clusters, per, rank, held(b ^ 1, 0), held(b ^ 1, 1), &sh.mbar[b ^ 1]);

    // 2. this block's statistics, per path
    const float scale2 = c.invTau * kLog2e;
    const OnlineSoftmax2 p0 = block_merge(slice_stats<SI>(x, held0, s0, V, scale2, rank, C), sh.scratch);
    OnlineSoftmax2 p1 = OnlineSoftmax2::empty();
    if (xm) p1 = block_merge(slice_stats<SI>(xm, held1, s1, V, scale2, rank, C), sh.scratch);
    if (threadIdx.x == 0) sh.part[0] = p0, sh.part[1] = p1;
    cluster_sync();

    // 3. block 0: the row pair's statistics, verdict and token terms
    if (rank == 0 && threadIdx.x == 0) {
      OnlineSoftmax2 t0 = OnlineSoftmax2::empty(), t1 = OnlineSoftmax2::empty();
      for (unsigned q = 0; q < C; ++q) {  // rank order: the same bits whatever ran first
        const K3Shared* o = map_shared_rank(&sh, q);
        t0 = OnlineSoftmax2::merge(t0, o->part[0]);
        t1 = OnlineSoftmax2::merge(t1, o->part[1]);
      }
      RowOut o{};
      o.s = finish_stats2<SI>(t0, x, V, target, c.invTau);
      if (xm) o.ms = finish_stats2<SI>(t1, xm, V, target, c.invTau);
      o.lp = (double)o.s.targetScaled - o.s.lse;
      o.a = (double)o.ms.targetScaled - o.ms.lse;
      finish_row(c, row, o);
      c.out[row] = o;
      sh.status = o.status;
      sh.coef[0] = grad_coef2(c.invTau, o.s, t0, o.t.gLp, o.t.gH, target, SI::to_float(x[target]) * scale2);
      sh.coef[1] = GradCoef2{};
      if (xm) sh.coef[1] = grad_coef2(c.invTau, o.ms, t1, o.t.gA, o.t.gHm, target, SI::to_float(xm[target]) * scale2);
    }
    cluster_sync();

    // 4. both gradient rows, each block its slice
    const K3Shared* lead = map_shared_rank(&sh, 0);
    const int32_t status = lead->status;  // cluster-uniform
    const GradCoef2 c0 = lead->coef[0], c1 = lead->coef[1];  // into registers: read once from block 0
    if (status == ROW_OK) {
      if (ch.grad) slice_grad<SI, SO>(x, held0, static_cast<TO*>(ch.grad) + r * V, s0, V, c0, rank, C, per);
      if (ch.maskedGrad) slice_grad<SI, SO>(xm, held1, static_cast<TO*>(ch.maskedGrad) + r * V, s1, V, c1, rank, C, per);
    }
    // 5. this block's reads of its held slices are done before the copy engine refills them. (Block 0's
    // partials and coefficients are safe without a cluster barrier: nobody writes them for the next row pair
    // before every block has passed that row pair's first cluster barrier.)
    fence_proxy_async();
    __syncthreads();
  }
  cluster_sync();  // no block may exit while another could still read its shared memory
}

// The cluster size, the vectors per block and the grid for this key, or false where k3 does not apply.
template <class SI, class SO>
bool shape_typed(const ShapeKey& key, const CudaTuning& tuning, LaunchShape& shape) {
  const DeviceFacts& f = device_facts(key.device);
  // The device must do clusters, and the kernel must be sm_90 machine code (not older PTX JIT-compiled for it).
  if (f.major < 9 || !f.clusterLaunch || kernel_binary_version(papo_rows_k3<SI, SO>) < 90) return false;
  const int64_t esz = (int64_t)dtype_bytes(key.dtype), perVec = 16 / esz;
  const int64_t nvec = (key.V + perVec - 1) / perVec;  // at most this many whole vectors per path
  const int paths = key.masked ? 2 : 1;
  // Double buffering where two row pairs fit in the cluster, else one; the fewest blocks that hold them. The
  // tuning may force either (PAPO_CUDA_CLUSTER, PAPO_CUDA_K3_BUFFERS: experiments and tests).
  for (int nbuf = 2; nbuf >= 1; --nbuf) {
    if (tuning.k3Buffers && tuning.k3Buffers != nbuf) continue;
    for (int C = 1; C <= kMaxCluster; C *= 2) {
      if (tuning.cluster && tuning.cluster != C) continue;
      const int64_t per = (nvec + C - 1) / C;
      const size_t smem = (size_t)(nbuf * paths * per * 16) + sizeof(K3Shared);
      if (smem > (size_t)f.optinSmem) continue;
      const int n = max_active_clusters(papo_rows_k3<SI, SO>, dim3(kK3Threads), smem, (unsigned)C);
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
  launch_kernel_cluster("papo_rows_k3", papo_rows_k3<SI, SO>, dim3((unsigned)(clusters * p.cluster)), dim3(kK3Threads),
                        p.smem, stream, (unsigned)p.cluster, c, ch, p.per, p.buffers);
}

// The instance for these dtypes (the gradient is the input's type or fp32).
template <class F>
auto with_types(int32_t dtype, int32_t gradType, F&& f) {
  const bool f32grad = gradType == DT_F32;
  switch (dtype) {
    case DT_BF16:
      return f32grad ? f(BF16{}, F32{}) : f(BF16{}, BF16{});
    case DT_F16:
      return f32grad ? f(F16{}, F32{}) : f(F16{}, F16{});
    default:
      return f(F32{}, F32{});
  }
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
