#include "vocab_merge.h"

#include <math.h>
#include <string.h>

// Built with -ffp-contract=off (CMakeLists.txt, binding.gyp), and told so again for clang, whose default contracts
// within an expression: a fused multiply-add rounds once where JavaScript rounds twice, and these bits must be
// JavaScript's.
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace papo {

double merge_exp(double x) {
  if (!(x >= -708.0)) return 0.0;
  // x = k ln2 + r, |r| <= ln2 / 2; ln2 in two parts, the first with trailing zeros so that k * it is exact.
  const double k = floor(x * 1.4426950408889634 + 0.5);
  const double r = (x - k * 0.693145751953125) - k * 1.428606820309417e-6;
  // e^r by its Taylor series to r^13 (the first term left out is 4e-18 relative), Horner's rule.
  double p = 1.6059043836821613e-10;
  p = p * r + 2.08767569878681e-9;
  p = p * r + 2.505210838544172e-8;
  p = p * r + 2.755731922398589e-7;
  p = p * r + 2.7557319223985893e-6;
  p = p * r + 2.48015873015873e-5;
  p = p * r + 1.984126984126984e-4;
  p = p * r + 1.388888888888889e-3;
  p = p * r + 8.333333333333333e-3;
  p = p * r + 4.1666666666666664e-2;
  p = p * r + 1.6666666666666666e-1;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  // 2^k, k in [-1022, 0], from its exponent bits: exact, where a pow might not be.
  const uint64_t bits = (uint64_t)(k + 1023.0) << 52;
  double scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

void merge_shard_fields(const double* max, const double* sumExp, const double* sumExpX, const double* target,
                        int64_t K, int64_t stride, double out[4]) {
  double m = -INFINITY;
  for (int64_t k = 0; k < K; ++k)
    if (max[k * stride] > m) m = max[k * stride];
  double S = 0.0, U = 0.0, t = 0.0;
  for (int64_t k = 0; k < K; ++k) {
    const double mk = max[k * stride];
    t += target[k * stride];
    if (mk == -INFINITY) continue;
    const double f = merge_exp(mk - m);
    S += sumExp[k * stride] * f;
    U += sumExpX[k * stride] * f;
  }
  out[0] = m, out[1] = S, out[2] = U, out[3] = t;
}

}  // namespace papo
