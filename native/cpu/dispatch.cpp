// Run-time choice of the row kernels: the widest instruction set this CPU and OS support, unless
// PAPO_CPU_ISA asks for a narrower one (for benchmarks and tests of every path on one machine).
#include <stdlib.h>
#include <string.h>

#include "row_kernels.h"

namespace papo {
namespace {

enum Isa { ISA_BASELINE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

Isa best_supported() {
#if (defined(__x86_64__) || defined(_M_X64)) && defined(PAPO_HAVE_X86_KERNELS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return ISA_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return ISA_AVX2;
#endif
  return ISA_BASELINE;
}

Isa requested(Isa best) {
  const char* env = getenv("PAPO_CPU_ISA");
  if (!env || !*env) return best;
  Isa want = best;
  if (!strcmp(env, "baseline")) want = ISA_BASELINE;
  if (!strcmp(env, "avx2")) want = ISA_AVX2;
  if (!strcmp(env, "avx512")) want = ISA_AVX512;
  return want < best ? want : best;
}

}  // namespace

const RowKernels& select_row_kernels() {
  static const RowKernels* chosen = [] {
    switch (requested(best_supported())) {
#if defined(PAPO_HAVE_X86_KERNELS)
      case ISA_AVX512:
        return &avx512::row_kernels();
      case ISA_AVX2:
        return &avx2::row_kernels();
#endif
      default:
        return &baseline::row_kernels();
    }
  }();
  return *chosen;
}

}  // namespace papo
