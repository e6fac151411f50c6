// JavaScript -> PapoCall / LogProbsCall. Every rule of the API lives once, in lib/validate.ts and lib/options.ts,
// with messages aimed at users. This checks only what keeps native code inside memory, whatever a JS caller
// passes: typed-array types and lengths, token ids and enum codes in range, sequence lengths that add up, the
// inputs a requested term reads being present, aliasing, and device pointer ranges. Failures throw
// papo::Error(InvalidArgument).
#pragma once

#include <napi.h>

#include "cuda/papo_cuda.h"
#include "core/call.h"

namespace papo {

enum class Backend { Cpu = 0, Cuda = 1, CudaNaive = 2 };

// Which backend runs a call, and for CUDA where: desc.backend, desc.device, desc.onDevice (logits and gradients
// are { ptr: bigint, bytes } device memory instead of typed arrays), desc.stream (bigint: the logits' stream,
// 0n the legacy default stream) and desc.maskedStream (bigint: the masked logits' stream when it may differ).
struct Target {
  Backend backend = Backend::Cpu;
  CudaExec cuda;
};

PapoCall parse_papo_call(const Napi::Object& desc);
// { backend, shards: [papoLoss descriptors of consecutive vocabulary shards], stats, maskedStats }: the CPU backend.
ShardedPapoCall parse_sharded_papo_call(const Napi::Object& desc);
LogProbsCall parse_log_probs_call(const Napi::Object& desc);
VocabStatsCall parse_vocab_stats_call(const Napi::Object& desc);
Target parse_target(const Napi::Object& desc);

// A bigint argument as an address (0 when absent); throws InvalidArgument naming `name` otherwise.
uint64_t parse_address(const Napi::Value& v, const char* name);

}  // namespace papo
