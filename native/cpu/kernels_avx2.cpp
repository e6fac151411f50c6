// Row kernels for the avx2 instruction set (flags set per file by CMakeLists.txt and binding.gyp).
#define PAPO_ISA avx2
#define PAPO_LANES 8  // one ymm register of floats
#include "row_kernels_impl.h"
