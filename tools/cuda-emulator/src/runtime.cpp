// The emulated device's runtime API: devices with an H100's properties, per-thread current device and
// contexts, errors with the emulator's diagnosis in their strings, memory, copies with CUDA's documented
// synchronisation, kernel launches, occupancy, the two driver entry points the library uses, fault injection
// and the counters that tests read.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <map>

#include "internal.h"

namespace papo_emu {

namespace {

std::atomic<int64_t> nDeviceSyncs{0}, nHostAllocs{0}, nLaunches{0}, nMallocs{0}, nFrees{0}, nDrains{0};
std::atomic<int64_t> nDeviceQueries{0};
std::atomic<int64_t> nApiCalls{0}, nCopiesToHost{0}, nBytesToHost{0}, nCopiesToDevice{0}, nBytesToDevice{0};
std::atomic<int64_t> nPageableCopies{0};
std::mutex& apiMu = *new std::mutex;
std::map<std::string, int64_t>& apiByName = *new std::map<std::string, int64_t>;
thread_local int apiDepth = 0;
std::atomic<uint64_t> launchCounter{0};
std::mutex kernelsMu;
std::map<std::string, int64_t> kernelsRun;  // by name
std::mutex& faultMu = *new std::mutex;  // never destroyed, like the rest of the emulator's state
int faultCountdown[(int)FaultKind::Count] = {};
int faultRepeat[(int)FaultKind::Count] = {};  // further calls that fail right after the nth
std::atomic<uint32_t> contextsMade{0};  // bit per device

thread_local std::string lastDetail;
thread_local cudaError_t lastDetailErr = cudaSuccess;

std::mutex& traceMu = *new std::mutex;
std::vector<KernelRun>& runs = *new std::vector<KernelRun>;
std::vector<std::pair<std::string, int>>& delays = *new std::vector<std::pair<std::string, int>>;
constexpr size_t kMaxRuns = 4096;

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int delay_of(const std::string& name) {
  std::lock_guard<std::mutex> lock(traceMu);
  for (const auto& d : delays)
    if (d.first == name) return d.second;
  return 0;
}

void record_run(KernelRun r) {
  std::lock_guard<std::mutex> lock(traceMu);
  if (runs.size() == kMaxRuns) runs.erase(runs.begin());
  runs.push_back(std::move(r));
}

struct KernelAttr {
  const void* kernel;
  int maxDynamicSmem;
};
std::mutex& attrMu = *new std::mutex;
std::vector<KernelAttr>& attrs = *new std::vector<KernelAttr>;

cudaDeviceProp make_prop(int device) {
  cudaDeviceProp p{};
  snprintf(p.name, sizeof p.name, "Emulated NVIDIA H100 (papo-kernels CPU emulator, device %d)", device);
  p.totalGlobalMem = (size_t)env_int("PAPO_EMU_MEMORY_MB", 4096) << 20;
  p.sharedMemPerBlock = 48 << 10;
  p.regsPerBlock = 65536;
  p.warpSize = 32;
  p.maxThreadsPerBlock = 1024;
  p.maxThreadsDim[0] = 1024, p.maxThreadsDim[1] = 1024, p.maxThreadsDim[2] = 64;
  p.maxGridSize[0] = 2147483647, p.maxGridSize[1] = 65535, p.maxGridSize[2] = 65535;
  p.major = 9;
  p.minor = 0;
  p.multiProcessorCount = 132;
  p.l2CacheSize = 50 << 20;
  p.persistingL2CacheMaxSize = 30 << 20;
  p.maxThreadsPerMultiProcessor = 2048;
  p.sharedMemPerMultiprocessor = 228 << 10;
  p.regsPerMultiprocessor = 65536;
  p.sharedMemPerBlockOptin = 227 << 10;
  p.maxBlocksPerMultiProcessor = 32;
  p.memoryBusWidth = 5120;
  p.clusterLaunch = 1;
  p.pciBusID = device;
  return p;
}

const char* space_name(Space s) {
  return s == Space::Device ? "device memory" : s == Space::Pinned ? "pinned host memory" : "pageable host memory";
}

// CUDA_ERROR_* values of the two driver entry points.
constexpr int kCuSuccess = 0, kCuInvalidValue = 1, kCuNotFound = 500;

int emu_cuCtxGetCurrent(void** ctx) {
  EMU_API("cuCtxGetCurrent");
  const HostThread& t = host_thread();
  *ctx = t.hasContext ? reinterpret_cast<void*>((uintptr_t)(t.device + 1)) : nullptr;
  return kCuSuccess;
}

int emu_cuMemGetAddressRange(unsigned long long* base, size_t* size, unsigned long long dptr) {
  EMU_API("cuMemGetAddressRange");
  const Region r = find_region(reinterpret_cast<const void*>((uintptr_t)dptr), 0, nullptr);
  if (r.space != Space::Device) return dptr ? kCuNotFound : kCuInvalidValue;
  if (base) *base = reinterpret_cast<uintptr_t>(r.ptr);
  if (size) *size = r.bytes;
  return kCuSuccess;
}

}  // namespace

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = getenv(name);
  return v && *v ? atoll(v) : fallback;
}

int device_count() {
  static const int n = (int)std::min<int64_t>(16, std::max<int64_t>(1, env_int("PAPO_EMU_DEVICES", 1)));
  return n;
}

const cudaDeviceProp& device_prop(int device) {
  static const std::vector<cudaDeviceProp>* props = [] {  // never destroyed: read by stream threads at exit too
    auto* v = new std::vector<cudaDeviceProp>;
    for (int i = 0; i < device_count(); ++i) v->push_back(make_prop(i));
    return v;
  }();
  return (*props)[device];
}

HostThread& host_thread() {
  static thread_local HostThread t;
  return t;
}

void ensure_context() {
  HostThread& t = host_thread();
  if (t.hasContext) return;
  t.hasContext = true;
  contextsMade |= 1u << t.device;
}

cudaError_t fail(cudaError_t err, const std::string& detail) {
  host_thread().lastError = err;
  lastDetail = detail;
  lastDetailErr = err;
  return err;
}

ApiCall::ApiCall(const char* name) {
  if (apiDepth++ > 0) return;
  ++nApiCalls;
  std::lock_guard<std::mutex> lock(apiMu);
  ++apiByName[name];
}

ApiCall::~ApiCall() { --apiDepth; }

void count_copy(bool toHost, size_t bytes, bool pageable) {
  if (toHost) ++nCopiesToHost, nBytesToHost += (int64_t)bytes;
  else ++nCopiesToDevice, nBytesToDevice += (int64_t)bytes;
  if (pageable) ++nPageableCopies;
}

bool should_fail(FaultKind kind) {
  std::lock_guard<std::mutex> lock(faultMu);
  int& n = faultCountdown[(int)kind];
  int& more = faultRepeat[(int)kind];
  if (n <= 0) {
    if (more <= 0) return false;
    --more;
    return true;
  }
  return --n == 0;
}

bool inject_fault(const std::string& kind, int nth, int times) {
  FaultKind k;
  if (kind == "cudaMalloc") k = FaultKind::Malloc;
  else if (kind == "cudaHostAlloc") k = FaultKind::HostAlloc;
  else if (kind == "launch") k = FaultKind::Launch;
  else if (kind == "memcpy") k = FaultKind::Memcpy;
  else return false;
  std::lock_guard<std::mutex> lock(faultMu);
  faultCountdown[(int)k] = std::max(0, nth);
  faultRepeat[(int)k] = nth > 0 ? std::max(0, times - 1) : 0;
  return true;
}

Stats stats() {
  Stats s;
  s.deviceSyncs = nDeviceSyncs;
  s.hostAllocs = nHostAllocs;
  s.mallocs = nMallocs;
  s.frees = nFrees;
  s.deviceDrains = nDrains;
  pool_stats(s);
  s.launches = nLaunches;
  {
    std::lock_guard<std::mutex> lock(kernelsMu);
    s.kernels = kernelsRun;
  }
  s.deviceQueries = nDeviceQueries;
  s.liveHostBytes = live_pinned_bytes();
  s.liveDeviceBytes = live_device_bytes(-1);
  s.apiCalls = nApiCalls;
  {
    std::lock_guard<std::mutex> lock(apiMu);
    s.apiCallsByName.assign(apiByName.begin(), apiByName.end());
  }
  s.copiesToHost = nCopiesToHost;
  s.bytesToHost = nBytesToHost;
  s.copiesToDevice = nCopiesToDevice;
  s.bytesToDevice = nBytesToDevice;
  s.pageableCopies = nPageableCopies;
  for (int d = 0; d < device_count(); ++d)
    if (contextsMade & (1u << d)) s.contexts.push_back(d);
  return s;
}

void reset_stats() {
  nDeviceSyncs = 0;
  nHostAllocs = 0;
  nMallocs = 0;
  nFrees = 0;
  nDrains = 0;
  reset_pool_stats();
  nLaunches = 0;
  {
    std::lock_guard<std::mutex> lock(kernelsMu);
    kernelsRun.clear();
  }
  nDeviceQueries = 0;
  nApiCalls = 0;
  {
    std::lock_guard<std::mutex> lock(apiMu);
    apiByName.clear();
  }
  nCopiesToHost = 0;
  nBytesToHost = 0;
  nCopiesToDevice = 0;
  nBytesToDevice = 0;
  nPageableCopies = 0;
  contextsMade = 0;
  {
    std::lock_guard<std::mutex> lock(traceMu);
    runs.clear();
    delays.clear();
  }
  // The threads' "context made" flags stay; a thread that made one before keeps it, as on a device.
}

int max_dynamic_smem(const void* kernel) {
  std::lock_guard<std::mutex> lock(attrMu);
  for (const KernelAttr& a : attrs)
    if (a.kernel == kernel) return a.maxDynamicSmem;
  return 48 << 10;
}

cudaError_t set_max_dynamic_smem(const void* kernel, int bytes) {
  EMU_API("cudaFuncSetAttribute");
  if (bytes < 0 || (size_t)bytes > device_prop(host_thread().device).sharedMemPerBlockOptin)
    return fail(cudaErrorInvalidValue, "cudaFuncAttributeMaxDynamicSharedMemorySize above the device's 227 KB");
  std::lock_guard<std::mutex> lock(attrMu);
  for (KernelAttr& a : attrs)
    if (a.kernel == kernel) return a.maxDynamicSmem = bytes, cudaSuccess;
  attrs.push_back({kernel, bytes});
  return cudaSuccess;
}

// Occupancy from threads, registers and shared memory, as the hardware computes it. Registers cannot be
// known here: PAPO_EMU_REGS_PER_THREAD (default 64, what ptxas reports for the fused kernel on sm_90).
cudaError_t occupancy(int* blocks, const void*, int blockSize, size_t dynamicSmem) {
  EMU_API("cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  if (!blocks || blockSize <= 0 || blockSize > 1024) return fail(cudaErrorInvalidValue);
  ++nDeviceQueries;
  ensure_context();
  const cudaDeviceProp& p = device_prop(host_thread().device);
  const int regs = (int)env_int("PAPO_EMU_REGS_PER_THREAD", 64);
  const int threads = (blockSize + 31) / 32 * 32;
  int n = std::min(p.maxBlocksPerMultiProcessor, p.maxThreadsPerMultiProcessor / threads);
  n = std::min(n, p.regsPerMultiprocessor / std::max(1, regs * threads));
  if (dynamicSmem) n = std::min<int>(n, (int)(p.sharedMemPerMultiprocessor / (dynamicSmem + 1024)));
  *blocks = std::max(n, 0);
  return cudaSuccess;
}

void launch(const char* name, const void* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            std::function<void()> body, dim3 cluster) {
  EMU_API(cluster.x > 1 ? "cudaLaunchKernelEx" : "cudaLaunchKernel");
  ensure_context();
  const uint64_t threads = (uint64_t)block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
      grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
    char buf[160];
    snprintf(buf, sizeof buf, "kernel %s: grid (%u,%u,%u), block (%u,%u,%u) is not a valid configuration", name,
             grid.x, grid.y, grid.z, block.x, block.y, block.z);
    fail(cudaErrorInvalidConfiguration, buf);
    return;
  }
  if (cluster.y != 1 || cluster.z != 1 || cluster.x < 1 || cluster.x > 8 || grid.x % cluster.x) {
    char buf[160];
    snprintf(buf, sizeof buf, "kernel %s: cluster (%u,%u,%u) for grid (%u,%u,%u): clusters of 1..8 blocks along x that divide the grid",
             name, cluster.x, cluster.y, cluster.z, grid.x, grid.y, grid.z);
    fail(cudaErrorInvalidConfiguration, buf);
    return;
  }
  if (stream_device(stream) != host_thread().device) {
    fail(cudaErrorInvalidResourceHandle, std::string("kernel ") + name + ": launched on a stream of device " +
                                             std::to_string(stream_device(stream)) + " while device " +
                                             std::to_string(host_thread().device) + " is current");
    return;
  }
  if ((int64_t)smem > max_dynamic_smem(kernel)) {
    fail(cudaErrorInvalidValue, std::string("kernel ") + name + ": " + std::to_string(smem) +
                                    " bytes of dynamic shared memory exceed its limit (cudaFuncSetAttribute)");
    return;
  }
  if (should_fail(FaultKind::Launch)) {
    fail(cudaErrorLaunchOutOfResources, std::string("kernel ") + name + ": injected launch failure");
    return;
  }
  auto L = std::make_shared<Launch>();
  L->name = name;
  L->kernel = kernel;
  L->grid = grid;
  L->block = block;
  L->smem = smem;
  L->cluster = cluster;
  L->body = std::move(body);
  L->seed = (uint64_t)env_int("PAPO_EMU_SEED", 1) * 0x2545F4914F6CDD1Dull + launchCounter++;
  const int device = stream_device(stream);
  enqueue(stream, "kernel", [L, device](std::string& detail) {
    const double start = now_ms();
    if (const int ms = delay_of(L->name)) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    cudaError_t err = run_grid(*L, detail);
    record_run(KernelRun{L->name, device, start, now_ms()});
    ++nLaunches;
    {
      std::lock_guard<std::mutex> lock(kernelsMu);
      ++kernelsRun[L->name];
    }
    if (err == cudaSuccess) {
      const std::string c = check_canaries();
      if (!c.empty()) {
        detail = "kernel " + L->name + ": " + c;
        err = cudaErrorIllegalAddress;
      }
    }
    return err;
  });
}

int max_active_clusters(dim3 block, size_t smem, unsigned cluster) {
  EMU_API("cudaOccupancyMaxActiveClusters");
  int perSm = 0;
  occupancy(&perSm, nullptr, (int)(block.x * block.y * block.z), smem);
  static const int gpcs[] = {18, 18, 18, 18, 16, 16, 16, 12};  // 132 SMs, as an H100 SXM's GPCs may hold them
  int n = 0;
  for (int sms : gpcs) n += sms * perSm / (int)std::max(1u, cluster);
  return n;
}

std::vector<KernelRun> kernel_runs() {
  std::lock_guard<std::mutex> lock(traceMu);
  return runs;
}

void set_kernel_delay(const std::string& name, int ms) {
  std::lock_guard<std::mutex> lock(traceMu);
  delays.erase(std::remove_if(delays.begin(), delays.end(), [&](const auto& d) { return d.first == name; }), delays.end());
  if (ms > 0) delays.emplace_back(name, ms);
}

void count_device_sync() { ++nDeviceSyncs; }
void count_host_alloc(int64_t) { ++nHostAllocs; }

}  // namespace papo_emu

using namespace papo_emu;

// ---- devices, errors ---------------------------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  EMU_API("cudaGetDeviceCount");
  if (!count) return fail(cudaErrorInvalidValue);
  *count = device_count();
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  EMU_API("cudaGetDevice");
  if (!device) return fail(cudaErrorInvalidValue);
  *device = host_thread().device;  // makes no context, as on CUDA
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  EMU_API("cudaSetDevice");
  if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
  HostThread& t = host_thread();
  t.device = device;
  t.hasContext = true;  // CUDA 12+: cudaSetDevice initialises the device's primary context
  contextsMade |= 1u << device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  EMU_API("cudaGetDeviceProperties");
  if (!prop) return fail(cudaErrorInvalidValue);
  if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
  *prop = device_prop(device);
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  EMU_API("cudaDeviceGetAttribute");
  if (!value) return fail(cudaErrorInvalidValue);
  ++nDeviceQueries;
  if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
  const cudaDeviceProp& p = device_prop(device);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = p.maxThreadsPerMultiProcessor; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = (int)p.sharedMemPerMultiprocessor; break;
    case cudaDevAttrMaxRegistersPerMultiprocessor: *value = p.regsPerMultiprocessor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)p.sharedMemPerBlockOptin; break;
    case cudaDevAttrMaxBlocksPerMultiprocessor: *value = p.maxBlocksPerMultiProcessor; break;
    case cudaDevAttrClusterLaunch: *value = p.clusterLaunch; break;
    default: return fail(cudaErrorInvalidValue, "device attribute not emulated");
  }
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  EMU_API("cudaDeviceSynchronize");
  count_device_sync();
  ensure_context();
  return synchronize_device(host_thread().device);
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  EMU_API("cudaRuntimeGetVersion");
  if (!version) return fail(cudaErrorInvalidValue);
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  EMU_API("cudaDriverGetVersion");
  if (!version) return fail(cudaErrorInvalidValue);
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  EMU_API("cudaGetLastError");
  HostThread& t = host_thread();
  const cudaError_t e = t.lastError;
  t.lastError = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  EMU_API("cudaPeekAtLastError");
  return host_thread().lastError;
}

const char* cudaGetErrorName(cudaError_t err) {
  EMU_API("cudaGetErrorName");
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorIllegalInstruction: return "cudaErrorIllegalInstruction";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t err) {
  EMU_API("cudaGetErrorString");
  const char* base;
  switch (err) {
    case cudaSuccess: base = "no error"; break;
    case cudaErrorInvalidValue: base = "invalid argument"; break;
    case cudaErrorMemoryAllocation: base = "out of memory"; break;
    case cudaErrorInvalidConfiguration: base = "invalid configuration argument"; break;
    case cudaErrorInvalidDevice: base = "invalid device ordinal"; break;
    case cudaErrorInvalidResourceHandle: base = "invalid resource handle"; break;
    case cudaErrorNotReady: base = "device not ready"; break;
    case cudaErrorIllegalAddress: base = "an illegal memory access was encountered"; break;
    case cudaErrorLaunchOutOfResources: base = "too many resources requested for launch"; break;
    case cudaErrorIllegalInstruction: base = "an illegal instruction was encountered"; break;
    case cudaErrorMisalignedAddress: base = "misaligned address"; break;
    case cudaErrorLaunchFailure: base = "unspecified launch failure"; break;
    default: base = "unknown error"; break;
  }
  // The emulator knows why: the last failure's diagnosis rides along with its code.
  static thread_local std::string s;
  s = base;
  if (err == lastDetailErr && !lastDetail.empty()) s += std::string(" [emulator: ") + lastDetail + "]";
  return s.c_str();
}

cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** funcPtr, unsigned int, unsigned long long,
                                             cudaDriverEntryPointQueryResult* status) {
  EMU_API("cudaGetDriverEntryPointByVersion");
  if (!symbol || !funcPtr) return fail(cudaErrorInvalidValue);
  *funcPtr = nullptr;
  if (!strcmp(symbol, "cuCtxGetCurrent")) *funcPtr = reinterpret_cast<void*>(&emu_cuCtxGetCurrent);
  else if (!strcmp(symbol, "cuMemGetAddressRange")) *funcPtr = reinterpret_cast<void*>(&emu_cuMemGetAddressRange);
  if (status) *status = *funcPtr ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
  return cudaSuccess;
}

// ---- memory --------------------------------------------------------------------------------------------------------

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  EMU_API("cudaMalloc");
  if (!ptr) return fail(cudaErrorInvalidValue);
  ensure_context();
  const int d = host_thread().device;
  ++nMallocs;
  if (should_fail(FaultKind::Malloc)) return fail(cudaErrorMemoryAllocation, "injected cudaMalloc failure");
  if ((int64_t)(live_device_bytes(d) + bytes) > (int64_t)device_prop(d).totalGlobalMem)
    return fail(cudaErrorMemoryAllocation, "beyond the emulated device's memory (PAPO_EMU_MEMORY_MB)");
  const cudaError_t e = device_alloc(ptr, bytes, d);
  return e == cudaSuccess ? e : fail(e);
}

cudaError_t cudaFree(void* ptr) {
  EMU_API("cudaFree");
  ensure_context();
  if (!ptr) return cudaSuccess;
  if (pool_owned(ptr)) return fail(cudaErrorInvalidValue, "cudaFree of a stream-ordered allocation (cudaFreeAsync frees it)");
  ++nFrees;
  ++nDrains;
  const Region r = find_region(ptr, 0, nullptr);
  drain_device(r.space == Space::Device ? r.device : host_thread().device);  // cudaFree waits for the device first
  const cudaError_t e = release(ptr, Space::Device);
  return e == cudaSuccess ? e : fail(e, "cudaFree of a pointer that is not the start of a device allocation");
}

cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int) {
  EMU_API("cudaHostAlloc");
  if (!ptr) return fail(cudaErrorInvalidValue);
  ensure_context();
  count_host_alloc((int64_t)bytes);
  if (should_fail(FaultKind::HostAlloc)) return fail(cudaErrorMemoryAllocation, "injected cudaHostAlloc failure");
  const cudaError_t e = pinned_alloc(ptr, bytes);
  return e == cudaSuccess ? e : fail(e);
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  EMU_API("cudaMallocHost");
  return cudaHostAlloc(ptr, bytes, cudaHostAllocDefault);
}

cudaError_t cudaFreeHost(void* ptr) {
  EMU_API("cudaFreeHost");
  ensure_context();
  if (!ptr) return cudaSuccess;
  ++nDrains;
  for (int d = 0; d < device_count(); ++d) drain_device(d);  // pinned memory may be in use by any device
  const cudaError_t e = release(ptr, Space::Pinned);
  return e == cudaSuccess ? e : fail(e, "cudaFreeHost of a pointer that cudaHostAlloc did not return");
}

cudaError_t cudaMemGetInfo(size_t* freeBytes, size_t* totalBytes) {
  EMU_API("cudaMemGetInfo");
  if (!freeBytes || !totalBytes) return fail(cudaErrorInvalidValue);
  ensure_context();
  const int d = host_thread().device;
  *totalBytes = device_prop(d).totalGlobalMem;
  *freeBytes = *totalBytes - std::min<size_t>(*totalBytes, (size_t)live_device_bytes(d));
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* ptr) {
  EMU_API("cudaPointerGetAttributes");
  if (!a) return fail(cudaErrorInvalidValue);
  ensure_context();
  const Region r = find_region(ptr, 0, nullptr);
  *a = cudaPointerAttributes{};
  a->device = r.space == Space::Device ? r.device : host_thread().device;
  a->type = r.space == Space::Device ? cudaMemoryTypeDevice
            : r.space == Space::Pinned ? cudaMemoryTypeHost
                                       : cudaMemoryTypeUnregistered;
  if (r.space == Space::Device) a->devicePointer = const_cast<void*>(ptr);
  else a->hostPointer = const_cast<void*>(ptr);
  return cudaSuccess;
}

namespace {

// A copy as CUDA orders it (the runtime API's "API synchronization behavior"):
//   - from pageable host memory: the data is staged at once (the caller may reuse it on return), and the
//     device write happens in stream order; cudaMemcpy first waits for the legacy stream, then returns
//     without waiting for that write;
//   - to pageable host memory: the call returns when the copy is done;
//   - pinned host memory is read or written when the stream gets there, so reusing it early is a race;
//   - device to device: asynchronous, even through cudaMemcpy.
cudaError_t copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream, bool syncApi) {
  if (bytes == 0) return cudaSuccess;
  if (!dst || !src) return fail(cudaErrorInvalidValue, "null pointer in a copy");
  std::string err;
  const Region d = find_region(dst, bytes, &err);
  if (!err.empty()) return fail(cudaErrorInvalidValue, "copy destination: " + err);
  const Region s = find_region(src, bytes, &err);
  if (!err.empty()) return fail(cudaErrorInvalidValue, "copy source: " + err);
  const bool dDev = d.space == Space::Device, sDev = s.space == Space::Device;
  const bool ok = kind == cudaMemcpyDefault || (kind == cudaMemcpyHostToDevice && dDev && !sDev) ||
                  (kind == cudaMemcpyDeviceToHost && !dDev && sDev) || (kind == cudaMemcpyDeviceToDevice && dDev && sDev) ||
                  (kind == cudaMemcpyHostToHost && !dDev && !sDev);
  if (!ok)
    return fail(cudaErrorInvalidValue, std::string("copy kind ") + std::to_string((int)kind) + " from " +
                                           space_name(s.space) + " to " + space_name(d.space));
  ensure_context();
  if (dDev != sDev) count_copy(sDev, bytes, (dDev ? s.space : d.space) == Space::Pageable);
  const bool inject = should_fail(FaultKind::Memcpy);
  auto injected = [](std::string& detail) {
    detail = "injected copy failure";
    return cudaErrorLaunchFailure;
  };
  if (!dDev && !sDev) {
    if (inject) return fail(cudaErrorLaunchFailure, "injected copy failure");
    memcpy(dst, src, bytes);
    return cudaSuccess;
  }
  if (s.space == Space::Pageable) {  // host to device, staged now
    if (syncApi) {  // "a stream sync is performed before the copy is initiated", and reports earlier failures
      const cudaError_t e = synchronize_stream(stream);
      if (e != cudaSuccess) return e;
    }
    auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + bytes);
    enqueue(stream, "copy from pageable memory", [=](std::string& detail) {
      if (inject) return injected(detail);
      if (freed_async(dst, &detail)) return cudaErrorIllegalAddress;
      memcpy(dst, staged->data(), bytes);
      return cudaSuccess;
    });
    return cudaSuccess;
  }
  CompletionPtr op = enqueue(stream, "copy", [=](std::string& detail) {
    if (inject) return injected(detail);
    if (freed_async(dst, &detail) || freed_async(src, &detail)) return cudaErrorIllegalAddress;
    memcpy(dst, src, bytes);
    return cudaSuccess;
  });
  const bool wait = d.space == Space::Pageable || (syncApi && !(dDev && sDev));
  return wait ? wait_op(stream, op) : cudaSuccess;
}

cudaError_t fill(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  std::string err;
  const Region r = find_region(ptr, bytes, &err);
  if (r.space != Space::Device) return fail(cudaErrorInvalidValue, "cudaMemset of memory that is not device memory");
  if (!err.empty()) return fail(cudaErrorInvalidValue, "cudaMemset: " + err);
  enqueue(stream, "memset", [=](std::string& detail) {
    if (freed_async(ptr, &detail)) return cudaErrorIllegalAddress;
    memset(ptr, value, bytes);
    return cudaSuccess;
  });
  return cudaSuccess;
}

}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  EMU_API("cudaMemcpy");
  return copy(dst, src, bytes, kind, 0, true);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  EMU_API("cudaMemcpyAsync");
  return copy(dst, src, bytes, kind, stream, false);
}

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  EMU_API("cudaMemset");
  return fill(ptr, value, bytes, 0);
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  EMU_API("cudaMemsetAsync");
  return fill(ptr, value, bytes, stream);
}
