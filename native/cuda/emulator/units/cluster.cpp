// The emulated build compiles the CUDA source as C++ (see ../../../../CMakeLists.txt, PAPO_EMULATED).
#include "../../cluster.cu"
