// Row kernels for the avx512 instruction set (flags set per file by CMakeLists.txt and binding.gyp).
#define PAPO_ISA avx512
#define PAPO_LANES 16  // one zmm register of floats
#include "row_kernels_impl.h"
