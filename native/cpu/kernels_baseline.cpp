// Row kernels for the baseline instruction set (flags set per file by CMakeLists.txt and binding.gyp).
#define PAPO_ISA baseline
#define PAPO_LANES 4  // one xmm (or NEON q) register of floats
#include "row_kernels_impl.h"
