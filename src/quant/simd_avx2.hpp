// AVX2 building blocks shared by the kernel files (quant dot products, ops float kernels).
// Include only after `#pragma GCC target("avx2,fma,f16c")`: everything here has internal linkage,
// so no AVX2-compiled copy of an inline function can leak into portable code.
#pragma once
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <cstdint>

#include "quant/blocks.hpp"

namespace epwa::simd {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float f16(const std::byte* p) {
  return _cvtsh_ss(quant::load_u16(p));
}
inline __m256i load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// 32 bytes: the low nibbles of 16 bytes at p, then their high nibbles (Q4_0/Q4_1/Q5_x order).
inline __m256i nibbles16(const uint8_t* p) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}
// Byte i = 0x10 where bit i of qh is set, else 0: the fifth bit of a Q5_0/Q5_1 block.
inline __m256i fifth_bits(uint32_t qh) {
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(qh)),
      _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}
// MXFP4: the doubled e2m1 integers (kMxfp4Values, -12..12) of 32 codes 0..15, by one shuffle.
inline __m256i mxfp4_values(__m256i codes) {
  const __m256i table = _mm256_broadcastsi128_si256(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(quant::kMxfp4Values)));
  return _mm256_shuffle_epi8(table, codes);
}
// u8 x s8 over 32 bytes -> 8 int32 sums.
inline __m256i dot_u8s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

}  // namespace
}  // namespace epwa::simd
#endif
