// Small AVX-512 helpers shared by the kernels. Include it only between a translation unit's
// `#pragma GCC target("avx512f,...")` and its pop_options: every function is static (internal to
// that unit), so none of this code can reach a caller compiled for a plain x86-64. Include the
// standard headers it uses before the pragma, so they are compiled for the default target.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mustdrop::model::kernel {

// 16 floats from float32 or bfloat16 (uint16_t bits) memory.
static inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
static inline __m512 load16(const uint16_t* p) {
  __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

static inline float to_float(float x) { return x; }
static inline float to_float(uint16_t x) {
  uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Stores x as float32, or as bfloat16 rounded to nearest even (as LibTorch rounds).
static inline void store(float x, float* p) { *p = x; }
static inline void store(float x, uint16_t* p) {
  if (std::isnan(x)) {
    *p = 0x7FC0;
    return;
  }
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  *p = static_cast<uint16_t>(bits >> 16);
}

// The first min(count, 16) lanes (none for count <= 0).
static inline __mmask16 tail_mask(int64_t count) {
  return count >= 16 ? static_cast<__mmask16>(0xFFFF)
                     : count <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << count) - 1u);
}

}  // namespace mustdrop::model::kernel
