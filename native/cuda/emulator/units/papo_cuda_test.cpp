// The kernels' test program, built against the emulated device.
#include "../../../test/papo_cuda_test.cu"
