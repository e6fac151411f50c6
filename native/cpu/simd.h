// Float vectors over GCC/Clang vector extensions, as wide as one register of the instruction set: 16 lanes on
// AVX-512 (zmm), 8 on AVX2 (ymm), 4 on baseline x86-64 or NEON (xmm / q). The translation unit of each
// instruction set sets PAPO_LANES (kernels_*.cpp); the math is written once. A vector wider than a register
// is what GCC 12 lowers badly (spills and scalarised lanes on AVX2), hence one register exactly.
//
// Included only from row_kernels_impl.h, inside the per-ISA namespace: every inline function here must be a
// distinct symbol per ISA, or the linker could hand AVX-512 code to a machine without it.

#ifndef PAPO_LANES
#error "define PAPO_LANES (4, 8 or 16) before including simd.h"
#endif
constexpr int kLanes = PAPO_LANES;
static_assert(kLanes == 4 || kLanes == 8 || kLanes == 16, "one register of 128, 256 or 512 bits");

typedef float vf __attribute__((vector_size(4 * PAPO_LANES)));
typedef int32_t vi __attribute__((vector_size(4 * PAPO_LANES)));
typedef uint32_t vu __attribute__((vector_size(4 * PAPO_LANES)));
typedef uint16_t vh __attribute__((vector_size(2 * PAPO_LANES)));

static inline vf splat(float x) { return vf{} + x; }
// NaN in b comes out (a > NaN is false): the clamps below keep a NaN input NaN, so one NaN logit turns its
// block's sums into NaN and the row is checked once per block instead of per element.
// On x86 that is exactly what MAXPS / MINPS compute, ties and NaN included (the second operand comes out); the
// intrinsic is one instruction where GCC lowers the select to a compare and a blend.
static inline vf vmax(vf a, vf b) {
#if defined(__AVX512F__) && PAPO_LANES == 16
  return (vf)_mm512_mask_max_ps((__m512)a, (__mmask16)-1, (__m512)a, (__m512)b);  // GCC 12 warns on the unmasked form
#elif defined(__AVX__) && PAPO_LANES == 8
  return (vf)_mm256_max_ps((__m256)a, (__m256)b);
#elif defined(__SSE__) && PAPO_LANES == 4
  return (vf)_mm_max_ps((__m128)a, (__m128)b);
#else
  return a > b ? a : b;
#endif
}
// a < b ? a : b, likewise.
static inline vf vmin(vf a, vf b) {
#if defined(__AVX512F__) && PAPO_LANES == 16
  return (vf)_mm512_mask_min_ps((__m512)a, (__mmask16)-1, (__m512)a, (__m512)b);
#elif defined(__AVX__) && PAPO_LANES == 8
  return (vf)_mm256_min_ps((__m256)a, (__m256)b);
#elif defined(__SSE__) && PAPO_LANES == 4
  return (vf)_mm_min_ps((__m128)a, (__m128)b);
#else
  return a < b ? a : b;
#endif
}
static inline float hmax(vf v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = v[i] > m ? v[i] : m;
  return m;
}
// Pairwise, in a fixed order, so the result does not depend on anything but the data (and the width).
static inline double hsum(vf v) {
  double s[kLanes];
  for (int i = 0; i < kLanes; ++i) s[i] = (double)v[i];
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) s[i] += s[i + w];
  return s[0];
}

// e^y for y <= ~88, exactly 0 below -87 so that excluded (-inf) logits get p = 0 and gradient 0, NaN for NaN.
// y = n ln2 + r, |r| <= ln2/2 (Cody-Waite, Cephes' two constants), and e^r by a degree-6 polynomial fitted here:
// minimax for the relative error on |r| <= 0.3466 by Remez, with 1 and 1 as its first coefficients (e^0 is exactly
// 1, so a row's max gets e_j = 1) and each float coefficient rounded in turn with the later ones refitted; its
// error, 3.2e-9, is far under float's 6e-8, so the rounding of the evaluation is what remains: at most 0.89 ulp
// with FMA, 1.18 without (every float in [-87, 0.5] against double exp), where Cephes' degree-7 polynomial gave
// 1.01 and 0.98 for a multiply (r^2) and an add more.
// vexp_bounded: the same for y already at most 88 (or NaN), as the kernels' arguments x_j - M_b are, without the
// upper clamp.
static inline vf vexp_bounded(vf y) {
#if defined(__AVX512F__) && PAPO_LANES == 16
  // VSCALEFPS multiplies by 2^n, and the zero-masking does what the lower clamp and the final select do below (an
  // input under -87 gives garbage that the mask drops): the same bits, fewer instructions.
  const vf x = y;
#else
  const vf x = vmax(splat(-87.0f), y);
#endif
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits
  const vf t = x * 1.44269504088896341f + magic;
  const vf n = t - magic;
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = splat(1.3838903e-3f);
  p = p * r + 8.3691925e-3f;
  p = p * r + 4.1668102e-2f;
  p = p * r + 1.6666517e-1f;
  p = p * r + 4.9999994e-1f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
#if defined(__AVX512F__) && PAPO_LANES == 16
  const __mmask16 keep = _mm512_cmp_ps_mask((__m512)y, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ);  // NaN is kept
  return (vf)_mm512_maskz_scalef_ps(keep, (__m512)p, (__m512)n);
#else
  const vi ni = (vi)t - (vi)splat(magic);
  const vf e = p * (vf)((ni + 127) << 23);
  return y < splat(-87.0f) ? splat(0.0f) : e;
#endif
}
// Any y: the clamp keeps 2^n finite.
static inline vf vexp(vf y) { return vexp_bounded(vmin(splat(88.0f), y)); }

// ---- loads and stores of one vector (PAPO_LANES elements), per storage type ----------------------------------------

// Word indices of a 16-lane register of dwords: 2k + 1, the high half of dword k, gets bf16 k (bf16 -> f32), and
// the high half of dword k goes to word k (f32 -> bf16). One word permute does either, where a widening or narrowing
// and a shift took two.
#if defined(__AVX512BW__) && PAPO_LANES == 16
static inline __m512i bf16_word_index(int odd_from) {
  alignas(64) static const uint16_t spread[32] = {0, 0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7,
                                                  0, 8, 0, 9, 0, 10, 0, 11, 0, 12, 0, 13, 0, 14, 0, 15};
  alignas(64) static const uint16_t gather[32] = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
                                                  1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
  return _mm512_load_si512(odd_from ? spread : gather);
}
#endif

static inline vf bf16_bits_to_f32(vh h) {
  // The widening in one instruction: GCC 12 splits __builtin_convertvector into halves and reassembles them.
#if defined(__AVX512BW__) && PAPO_LANES == 16
  // bf16 k into the high word of dword k, the low words zeroed by the mask.
  return (vf)_mm512_maskz_permutexvar_epi16(0xaaaaaaaau, bf16_word_index(1), _mm512_castsi256_si512((__m256i)h));
#elif defined(__AVX512F__) && PAPO_LANES == 16
  return (vf)_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16);
#elif defined(__AVX2__) && PAPO_LANES == 8
  return (vf)_mm256_slli_epi32(_mm256_cvtepu16_epi32((__m128i)h), 16);
#else
  return (vf)(__builtin_convertvector(h, vu) << 16);
#endif
}

static inline vh f32_to_bf16_bits(vf x) {
  // bf16_bits_from_f32_bits (core/dtype.h) on every lane: round to nearest even; a NaN stays a (quiet) NaN.
#if defined(__AVX512BW__) && PAPO_LANES == 16
  // The same bits: the rounding and the NaN's quiet bit in the high word, which the permute takes.
  const __m512i u = (__m512i)x;
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, lsb), _mm512_set1_epi32(0x7fff));
  const __mmask16 nan = _mm512_cmp_ps_mask((__m512)x, (__m512)x, _CMP_UNORD_Q);
  r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x400000));
  return (vh)_mm512_castsi512_si256(_mm512_permutexvar_epi16(bf16_word_index(0), r));
#else
  const vu u = (vu)x;
  const vu rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const auto nan = (u & 0x7fffffffu) > 0x7f800000u;
  return __builtin_convertvector(nan ? ((u >> 16) | 0x40u) : rounded, vh);
#endif
}

static inline vf f16_bits_to_f32(vh h) {
#if defined(__AVX512F__) && PAPO_LANES == 16
  __m256i raw;
  memcpy(&raw, &h, sizeof raw);
  __m512 f = _mm512_cvtph_ps(raw);
  vf out;
  memcpy(&out, &f, sizeof out);
  return out;
#elif defined(__F16C__) && PAPO_LANES == 8
  __m128i raw;
  memcpy(&raw, &h, 16);
  __m256 f = _mm256_cvtph_ps(raw);
  vf out;
  memcpy(&out, &f, 32);
  return out;
#else
  // Exponent rebias by a float multiply handles normals and subnormals alike; inf/NaN get the top exponent.
  const vu u = __builtin_convertvector(h, vu);
  const vu sign = (u & 0x8000u) << 16;
  const vu body = (u & 0x7fffu) << 13;
  const vf scaled = (vf)body * 0x1p112f;
  const auto infnan = (u & 0x7c00u) == 0x7c00u;
  const vu bits = infnan ? (body | 0x7f800000u) : (vu)scaled;
  return (vf)(bits | sign);
#endif
}

static inline uint16_t f32_to_f16_scalar(float f) {
  // Round to nearest even, with subnormals, overflow to inf and NaN preserved.
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
  if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (x < 0x38800000u) {                                     // below the smallest normal half: subnormal or 0
    float a;
    memcpy(&a, &x, 4);
    a += 0.5f;  // the FPU's round-to-nearest-even places the subnormal in the low bits
    uint32_t b;
    memcpy(&b, &a, 4);
    return (uint16_t)(sign | (b - 0x3f000000u));
  }
  const uint32_t odd = (x >> 13) & 1u;
  x += 0xc8000fffu + odd;  // rebias the exponent (-112 << 23) and round
  return (uint16_t)(sign | (x >> 13));
}

static inline vh f32_to_f16_bits(vf x) {
#if defined(__AVX512F__) && PAPO_LANES == 16
  __m512 f;
  memcpy(&f, &x, sizeof f);
  __m256i h = _mm512_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  vh out;
  memcpy(&out, &h, sizeof out);
  return out;
#elif defined(__F16C__) && PAPO_LANES == 8
  __m256 f;
  memcpy(&f, &x, 32);
  __m128i h = _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT);
  vh out;
  memcpy(&out, &h, 16);
  return out;
#else
  vh out;
  for (int i = 0; i < kLanes; ++i) out[i] = f32_to_f16_scalar(x[i]);
  return out;
#endif
}

// A non-temporal store of one register (its bytes, of any element type) to p, aligned to its size: the line is
// written to memory without being read first and without filling the cache. Elsewhere, a plain store.
template <class V>
static inline void stream_bytes(void* p, const V& v) {
#if defined(__AVX512F__)
  if constexpr (sizeof v == 64) return _mm512_stream_si512((__m512i*)p, (__m512i)v);
#endif
#if defined(__AVX__)
  if constexpr (sizeof v == 32) return _mm256_stream_si256((__m256i*)p, (__m256i)v);
#endif
#if defined(__SSE2__)
  if constexpr (sizeof v == 16) return _mm_stream_si128((__m128i*)p, (__m128i)v);
#endif
#if defined(__SSE2__) && defined(__x86_64__)
  if constexpr (sizeof v == 8) return _mm_stream_si64((long long*)p, (long long)v);
#endif
  memcpy(p, &v, sizeof v);
}
// The non-temporal stores before it are done before any later store (the thread pool's hand-over included).
static inline void stream_fence() {
#if defined(__SSE__)
  _mm_sfence();
#endif
}

// Storage types: float, and the raw bits of fp16 / bf16 in uint16_t.
struct F32 {
  typedef float T;
  static vf load(const T* p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, vf v) { memcpy(p, &v, sizeof v); }
  static void stream(T* p, vf v) { stream_bytes(p, v); }
};
// fp16 and bf16 travel as raw bits; only the conversion differs.
template <vf (*ToF32)(vh), vh (*FromF32)(vf)>
struct Half {
  typedef uint16_t T;
  static vf load(const T* p) {
    vh h;
    memcpy(&h, p, sizeof h);
    return ToF32(h);
  }
  static void store(T* p, vf v) {
    vh h = FromF32(v);
    memcpy(p, &h, sizeof h);
  }
  static void stream(T* p, vf v) { stream_bytes(p, FromF32(v)); }
};
typedef Half<bf16_bits_to_f32, f32_to_bf16_bits> BF16;
typedef Half<f16_bits_to_f32, f32_to_f16_bits> F16;

// The last, partial vector of a row: padded with `fill` on load, only `count` lanes written on store.
template <class S>
static inline vf load_partial(const typename S::T* p, int64_t count, float fill) {
  typename S::T buf[kLanes];
  memcpy(buf, p, (size_t)count * sizeof(typename S::T));
  vf v = S::load(buf);
  for (int64_t i = count; i < kLanes; ++i) v[i] = fill;
  return v;
}
template <class S>
static inline void store_partial(typename S::T* p, int64_t count, vf v) {
  typename S::T buf[kLanes];
  S::store(buf, v);
  memcpy(p, buf, (size_t)count * sizeof(typename S::T));
}
template <class S>
static inline float load_one(const typename S::T* p) {
  return load_partial<S>(p, 1, 0.0f)[0];
}
