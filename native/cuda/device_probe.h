// What the CUDA runtime reports on this machine. Compiled by nvcc when the toolkit is found, else a stub; the
// runtime is linked statically, so a CUDA build loads on machines without a driver and reports no device.
#pragma once

#include <string>
#include <vector>

namespace papo {

struct CudaDevice {
  int index;
  std::string name;
  int major, minor;
  size_t totalMemory;
  int multiprocessors;
};

struct CudaProbe {
  bool built = false;             // the addon was compiled with CUDA
  int runtimeVersion = 0;         // e.g. 13000
  int driverVersion = 0;          // 0: no driver
  std::string architectures;      // the compiled list, e.g. "75;80;86;89;90"
  std::string status;             // why there is no device, when there is none
  std::vector<CudaDevice> devices;
};

CudaProbe probe_cuda();

}  // namespace papo
