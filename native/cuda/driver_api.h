// The two CUDA driver queries the runtime API has no equivalent for, reached through the runtime's
// cudaGetDriverEntryPointByVersion so that nothing links against libcuda (the addon must load on machines
// without a driver) and no driver header (cuda.h) is needed.
//
// Both return false when they cannot tell: no driver, an entry point this driver lacks, or a driver error.
// Callers then skip what depends on the answer (never guess).
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace papo {

// Whether the calling thread has a current CUDA context (cuCtxGetCurrent) in *has.
bool driver_current_context(bool* has);

// The allocation that contains device address p (cuMemGetAddressRange): its first byte and its size.
bool driver_address_range(const void* p, uintptr_t* base, size_t* size);

}  // namespace papo
