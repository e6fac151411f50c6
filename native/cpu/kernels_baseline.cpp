// Row kernels for the baseline instruction set (flags set per file by CMakeLists.txt and binding.gyp).
#define PAPO_ISA baseline
#include "row_kernels_impl.h"
