// The emulator's cuda_fp16.h: IEEE half storage and the conversions the kernels use, round to nearest even.
#pragma once

#include <stdint.h>
#include <string.h>

#include "cuda_runtime.h"

struct __half {
  uint16_t bits;
};

inline float __half2float(__half h) {
  const uint32_t s = (uint32_t)(h.bits & 0x8000u) << 16, e = (h.bits >> 10) & 0x1f, m = h.bits & 0x3ffu;
  uint32_t u;
  if (e == 0x1f) {
    u = s | 0x7f800000u | (m << 13);  // Inf or NaN (payload kept)
  } else if (e != 0) {
    u = s | ((e + 112) << 23) | (m << 13);
  } else if (m == 0) {
    u = s;
  } else {  // subnormal half: normalise
    int k = -1;
    uint32_t mm = m;
    do {
      ++k;
      mm <<= 1;
    } while (!(mm & 0x400u));
    u = s | ((uint32_t)(112 - k) << 23) | ((mm & 0x3ffu) << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

inline __half __float2half_rn(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  const uint16_t s = (uint16_t)((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  uint16_t h;
  if (a > 0x7f800000u) {
    h = s | 0x7e00u | (uint16_t)((a >> 13) & 0x3ffu);  // NaN stays NaN
  } else if (a >= 0x477ff000u) {
    h = s | 0x7c00u;  // rounds to or beyond 65520: Inf
  } else if (a >= 0x38800000u) {  // normal half
    const uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u;
    h = s | (uint16_t)(r >> 13);
  } else if (a >= 0x33000000u) {  // subnormal half: shift the implicit bit in, round to nearest even
    const uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    const uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    h = s | (uint16_t)(q + (rem > half || (rem == half && (q & 1u))));
  } else {
    h = s;
  }
  return __half{h};
}

inline uint16_t __half_as_ushort(__half h) { return h.bits; }
inline __half __ushort_as_half(uint16_t b) { return __half{b}; }
