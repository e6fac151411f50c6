// The storage types of logits and gradients, as both backends and the addon name them.
#pragma once

#include <stddef.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define PAPO_DTYPE_HD __host__ __device__ __forceinline__
#else
#define PAPO_DTYPE_HD inline
#endif

namespace papo {

// The codes travel to JavaScript through the addon's enum tables (napi/enums.cpp), never by position.
enum DType : int32_t { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2 };

// Bytes per element: fp32 is 4, fp16 and bf16 are 2.
PAPO_DTYPE_HD size_t dtype_bytes(int32_t dtype) { return dtype == DT_F32 ? 4 : 2; }

// float32 -> bfloat16 bits, rounding to nearest even; NaN stays NaN (quietened, sign kept), where the plain
// rounding would carry a NaN payload into the exponent and give Infinity.
PAPO_DTYPE_HD uint16_t bf16_bits_from_f32_bits(uint32_t u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace papo
