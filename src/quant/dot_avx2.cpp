// AVX2 kernels (with FMA and F16C): integer dot products of unpacked weight bytes with int8
// activations through maddubs (u8 x s8 -> s16 pairs) and madd (s16 -> s32). Compiled for AVX2
// by a target pragma, called only when cpu_features() says the CPU has it.
#include <bit>

#include "epwa/quant.hpp"
#include "quant/blocks.hpp"
#include "quant/kernels.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace epwa::quant {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float f16(const std::byte* p) {
  return _cvtsh_ss(load_u16(p));
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
// u8 x s8 over 32 bytes -> 8 int32 sums.
inline __m256i dot_u8s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

float dot_f32(const std::byte* w, const PackedVector& x) {
  const float* a = reinterpret_cast<const float*>(w);
  const float* b = x.f32();
  const int64_t n = x.size();
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// F16 and BF16 rows: widen 8 values to f32, then FMA.
template <bool BF>
inline __m256 widen8(const std::byte* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (BF) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}
template <bool BF>
float dot_half(const std::byte* w, const PackedVector& x) {
  const float* b = x.f32();
  const int64_t n = x.size();
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(widen8<BF>(w + 2 * i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(widen8<BF>(w + 2 * i + 16), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(widen8<BF>(w + 2 * i + 32), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(widen8<BF>(w + 2 * i + 48), _mm256_loadu_ps(b + i + 24), s3);
  }
  float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) {
    const uint16_t h = load_u16(w + 2 * i);
    s += (BF ? std::bit_cast<float>(static_cast<uint32_t>(h) << 16) : _cvtsh_ss(h)) * b[i];
  }
  return s;
}

float dot_q8_0(const std::byte* w, const PackedVector& x) {
  const int64_t nb = x.size() / 32;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
  int64_t b = 0;
  auto block = [&](int64_t i, __m256 acc) {
    const std::byte* blk = w + i * Q8_0::bytes;
    const __m256i q = load256(blk + Q8_0::qs);
    const __m256i y = load256(x.qs() + 32 * i);
    // sign trick: |q| as u8 against y carrying q's sign
    const __m256i p = dot_u8s8(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q));
    return _mm256_fmadd_ps(_mm256_set1_ps(f16(blk + Q8_0::d) * x.scales()[i]),
                           _mm256_cvtepi32_ps(p), acc);
  };
  for (; b + 2 <= nb; b += 2) {
    acc0 = block(b, acc0);
    acc1 = block(b + 1, acc1);
  }
  if (b < nb) acc0 = block(b, acc0);
  return hsum(_mm256_add_ps(acc0, acc1));
}

// Q4_0/Q4_1/Q5_0/Q5_1: bytes 0..15 or 0..31 unsigned, then the offset (-OFF per value) or the min
// (m per value) applied through the block's activation sum.
template <size_t D, size_t M, size_t QH, size_t QS, size_t BYTES, int OFF>
float dot_small(const std::byte* w, const PackedVector& x) {
  const int64_t nb = x.size() / 32;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
  float corr = 0.0f;
  auto block = [&](int64_t i, __m256 acc) {
    const std::byte* blk = w + i * BYTES;
    __m256i q = nibbles16(u8(blk + QS));
    if constexpr (QH != 0) q = _mm256_or_si256(q, fifth_bits(load_u32(blk + QH)));
    const __m256i p = dot_u8s8(q, load256(x.qs() + 32 * i));
    const float dx = x.scales()[i];
    const float dd = f16(blk + D) * dx;
    if constexpr (M != 0) {
      corr += f16(blk + M) * dx * static_cast<float>(x.sums()[i]);
    } else {
      corr -= dd * static_cast<float>(OFF * x.sums()[i]);
    }
    return _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(p), acc);
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    acc0 = block(b, acc0);
    acc1 = block(b + 1, acc1);
  }
  if (b < nb) acc0 = block(b, acc0);
  return hsum(_mm256_add_ps(acc0, acc1)) + corr;
}

template <bool FIVE>
float dot_k_affine(const std::byte* w, const PackedVector& x) {
  constexpr size_t bytes = FIVE ? Q5_K::bytes : Q4_K::bytes;
  constexpr size_t off_qs = FIVE ? Q5_K::qs : Q4_K::qs;
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  float corr = 0.0f;
  for (int64_t b = 0; b < x.size() / 256; ++b, w += bytes) {
    const uint8_t* sc = u8(w + Q4_K::scales);
    const uint8_t* q = u8(w + off_qs);
    const int8_t* y = x.qs() + 256 * b;
    const int32_t* bs = x.sums() + 16 * b;
    __m256i qh;
    if constexpr (FIVE) qh = load256(w + Q5_K::qh);
    __m256i sumi = _mm256_setzero_si256();
    int32_t summ = 0;
    for (int c = 0; c < 4; ++c, q += 32, y += 64) {
      uint8_t s0, m0, s1, m1;
      scale_min_k4(2 * c, sc, s0, m0);
      scale_min_k4(2 * c + 1, sc, s1, m1);
      const __m256i raw = load256(q);
      __m256i v0 = _mm256_and_si256(raw, low4),
              v1 = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
      if constexpr (FIVE) {
        v0 = _mm256_or_si256(
            v0, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
        v1 = _mm256_or_si256(
            v1, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
      }
      const __m256i p0 =
          _mm256_madd_epi16(_mm256_maddubs_epi16(v0, load256(y)), _mm256_set1_epi16(s0));
      const __m256i p1 =
          _mm256_madd_epi16(_mm256_maddubs_epi16(v1, load256(y + 32)), _mm256_set1_epi16(s1));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
      summ += m0 * (bs[4 * c] + bs[4 * c + 1]) + m1 * (bs[4 * c + 2] + bs[4 * c + 3]);
    }
    const float dx = x.scales()[b];
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w + Q4_K::d) * dx), _mm256_cvtepi32_ps(sumi), acc);
    corr -= f16(w + Q4_K::dmin) * dx * static_cast<float>(summ);
  }
  return hsum(acc) + corr;
}

float dot_q6_k(const std::byte* w, const PackedVector& x) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(0x03);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < x.size() / 256; ++b, w += Q6_K::bytes) {
    const uint8_t* ql = u8(w + Q6_K::ql);
    const uint8_t* qh = u8(w + Q6_K::qh);
    const auto* sc = reinterpret_cast<const int8_t*>(w + Q6_K::scales);
    const int8_t* y = x.qs() + 256 * b;
    __m256i sumi = _mm256_setzero_si256();
    // Two scales per 32 values: the int16 lanes 0-7 of maddubs cover values 0-15, lanes 8-15 16-31.
    auto scaled = [&](__m256i v, const int8_t* yy, int g) {
      const __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
      return _mm256_madd_epi16(_mm256_maddubs_epi16(v, load256(yy)), s);
    };
    for (int h = 0; h < 2; ++h, ql += 64, qh += 32, y += 128, sc += 8) {
      const __m256i l0 = load256(ql), l1 = load256(ql + 32), hi = load256(qh);
      const auto high = [&](int shift) {
        return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hi, shift), low2), 4);
      };
      const __m256i q1 = _mm256_or_si256(_mm256_and_si256(l0, low4), high(0));
      const __m256i q2 = _mm256_or_si256(_mm256_and_si256(l1, low4), high(2));
      const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), high(4));
      const __m256i q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4), high(6));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(scaled(q1, y, 0), scaled(q2, y + 32, 2)));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(scaled(q3, y + 64, 4), scaled(q4, y + 96, 6)));
    }
    sc -= 16;
    const int32_t* bs = x.sums() + 16 * b;
    int32_t off = 0;  // the -32 of every value, through the sums of 16 activations
    for (int g = 0; g < 16; ++g) off += sc[g] * bs[g];
    sumi = _mm256_sub_epi32(sumi, _mm256_setr_epi32(32 * off, 0, 0, 0, 0, 0, 0, 0));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w + Q6_K::d) * x.scales()[b]),
                          _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
}

}  // namespace

RowDot row_dot_avx2(DType t) {
  switch (t) {
    case DType::F32:
      return dot_f32;
    case DType::F16:
      return dot_half<false>;
    case DType::BF16:
      return dot_half<true>;
    case DType::Q8_0:
      return dot_q8_0;
    case DType::Q4_0:
      return dot_small<Q4_0::d, 0, 0, Q4_0::qs, Q4_0::bytes, 8>;
    case DType::Q4_1:
      return dot_small<Q4_1::d, Q4_1::m, 0, Q4_1::qs, Q4_1::bytes, 0>;
    case DType::Q5_0:
      return dot_small<Q5_0::d, 0, Q5_0::qh, Q5_0::qs, Q5_0::bytes, 16>;
    case DType::Q5_1:
      return dot_small<Q5_1::d, Q5_1::m, Q5_1::qh, Q5_1::qs, Q5_1::bytes, 0>;
    case DType::Q4_K:
      return dot_k_affine<false>;
    case DType::Q5_K:
      return dot_k_affine<true>;
    case DType::Q6_K:
      return dot_q6_k;
  }
  return nullptr;
}

}  // namespace epwa::quant

#pragma GCC pop_options

#else

namespace epwa::quant {
RowDot row_dot_avx2(DType) {
  return nullptr;
}
}  // namespace epwa::quant

#endif
