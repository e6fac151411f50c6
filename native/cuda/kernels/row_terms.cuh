// One row's verdict and token terms, shared by the fused kernels and the naive chain: given both paths'
// statistics (o.s, o.ms) and sampled-token log-probs (o.lp, and o.a when there are masked logits), set o.status
// and o.t the way the CPU backend does (papo_cpu.cpp), with token_terms() from core/token_math.h.
#pragma once

#include "core/token_math.h"
#include "core/row_status.h"
#include "cuda/device_call.h"

namespace papo {
namespace cuda {

// Where finish_row() reads the row's per-token inputs: the call's arrays at the row (RowInputsAt, read as they
// are needed), or anything else with the same three members (k3 reads them ahead into shared memory).
struct RowInputsAt {
  const TokenInputs& tok;
  int64_t row;
  __device__ double maskedLogProb() const { return tok.maskedLogProbs ? tok.maskedLogProbs[row] : 0.0; }
  __device__ double mask() const { return tok.mask ? tok.mask[row] : 1.0; }
  __device__ TokenInput input(double lp, double a, double H, double Hm) const {
    return token_input(tok, row, lp, a, H, Hm);
  }
};

template <class Inputs>
__device__ inline void finish_row(const DeviceCall& c, const Inputs& in, RowOut& o) {
  if (o.s.status != ROW_OK) {
    o.status = o.s.status;
    return;
  }
  if (c.hasMaskedLogits && o.ms.status != ROW_OK) {
    o.status = o.ms.status;
    o.onMasked = 1;
    return;
  }
  if (!c.hasMaskedLogits) o.a = in.maskedLogProb();
  if (c.terms == TERMS_NONE) return;
  const double m = in.mask();
  if (m == 0.0) return;  // o.t stays zero: no loss, zero gradient
  if (isinf(o.lp) || isinf(o.a)) {
    o.status = kTargetExcluded;
    o.onMasked = !isinf(o.lp);
    return;
  }
  if (c.terms == TERMS_HOST) return;
  o.t = token_terms(c.params, in.input(o.lp, o.a, o.s.entropy, c.hasMaskedLogits ? o.ms.entropy : 0.0));
}

__device__ inline void finish_row(const DeviceCall& c, int64_t row, RowOut& o) {
  finish_row(c, RowInputsAt{c.tok, row}, o);
}

}  // namespace cuda
}  // namespace papo
