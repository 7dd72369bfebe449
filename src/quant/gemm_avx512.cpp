// Prompt tiles with AVX-512 VNNI (`vpdpbusd` on 256-bit registers, AVX-512 VL): the layout and
// the float steps of gemm_avx2.cpp, with the integer block sums formed by one instruction per 32
// byte products instead of AVX2's maddubs + madd + adds. Integer sums are exact either way, so the
// results stay bit-identical to vec_dot_rows (the AVX2 decode kernels).
//
// Q4_0: the nibbles (u8) times the int8 activations, four vpdpbusd per half of four blocks.
// Q8_0: int8 times int8 has no VNNI instruction; the activations are repacked as u8 y + 128
// (y ^ 0x80) and each half's accumulator starts at -128 * sum(w) of its lanes (formed once per
// row and group), so sum((y + 128) w) - 128 sum(w) = sum(y w) with no sign trick per vector.
// The K-quants keep the AVX2 tiles (their int16 scale products gain little from VNNI).
#include <algorithm>
#include <cstring>
#include <span>
#include <vector>

#include "epwa/quant.hpp"
#include "quant/blocks.hpp"
#include "quant/kernels.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")

#include "quant/gemm_layout.hpp"

namespace epwa::quant {
namespace {
using namespace simd;

// Lanes [a a c c b b d d] of one half: four u8 x s8 dot steps on top of `start`.
inline __m256i half_sums(__m256i start, const __m256i* u, const uint8_t* ys) {
  const __m256i a =
      _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(start, u[0], load256(ys)), u[1], load256(ys + 32));
  return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(a, u[2], load256(ys + 64)), u[3],
                             load256(ys + 96));
}
// Signed weights against u8 activations (Q8_0).
inline __m256i half_sums_signed(__m256i start, const __m256i* w, const uint8_t* yu) {
  const __m256i a =
      _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(start, load256(yu), w[0]), load256(yu + 32), w[1]);
  return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(a, load256(yu + 64), w[2]), load256(yu + 96),
                             w[3]);
}

struct Q4_0Vnni {
  static constexpr size_t kBytes = Q4_0::bytes;
  static Q4_0Group unpack(const std::byte* blk) { return Q4_0Group::of(blk); }
  static __m256i sums(const Q4_0Group& g, const uint8_t* yv) {
    const __m256i zero = _mm256_setzero_si256();
    return _mm256_sub_epi32(
        _mm256_hadd_epi32(half_sums(zero, g.w, yv), half_sums(zero, g.w + 4, yv + 128)),
        load256(yv + 288));
  }
};

struct Q8_0Vnni {
  static constexpr size_t kBytes = Q8_0::bytes;
  // The weights and, per half, -128 * sum(w) of each lane (|.| <= 16 * 128 * 128): the offset
  // the u8 activations y + 128 add, removed by starting the sums there.
  struct Group {
    __m256i w[8], bias[2];
  };
  static Group unpack(const std::byte* blk) {
    const __m256i u128 = _mm256_set1_epi8(-128);  // 128 as u8
    Group g;
    unpack_q8_0(blk, g.w);
    for (int half = 0; half < 2; ++half) {
      __m256i s = _mm256_setzero_si256();
      for (int j = 0; j < 4; ++j) s = _mm256_dpbusd_epi32(s, u128, g.w[4 * half + j]);
      g.bias[half] = _mm256_sub_epi32(_mm256_setzero_si256(), s);
    }
    return g;
  }
  static __m256i sums(const Group& g, const uint8_t* yv) {
    return _mm256_hadd_epi32(half_sums_signed(g.bias[0], g.w, yv),
                             half_sums_signed(g.bias[1], g.w + 4, yv + 128));
  }
};

void repack_q4_0(const PackedVector& x, uint8_t* dst) {
  repack_vector(x, true, false, dst);
}
void repack_q8_0_u8(const PackedVector& x, uint8_t* dst) {
  repack_vector(x, false, true, dst);
}
const TileFormat kFmtQ4_0{32, 8, kGroupBytes, repack_q4_0, kGroupTiles<Q4_0Vnni>};
const TileFormat kFmtQ8_0{32, 8, kGroupBytes, repack_q8_0_u8, kGroupTiles<Q8_0Vnni>};

}  // namespace
}  // namespace epwa::quant

#pragma GCC pop_options

namespace epwa::quant {
namespace {
template <const TileFormat* F>
void gemm_vnni(const std::byte* w, int64_t row_bytes, std::span<const PackedVector> xs,
               int64_t row_begin, int64_t row_end, float* out, int64_t out_stride) {
  run_tiles(*F, w, row_bytes, xs, row_begin, row_end, out, out_stride);
}
}  // namespace

RowsMultiDot gemm_avx512vnni(DType t) {
  switch (t) {
    case DType::Q4_0:
      return gemm_vnni<&kFmtQ4_0>;
    case DType::Q8_0:
      return gemm_vnni<&kFmtQ8_0>;
    default:
      return nullptr;
  }
}

}  // namespace epwa::quant

#else

namespace epwa::quant {
RowsMultiDot gemm_avx512vnni(DType) {
  return nullptr;
}
}  // namespace epwa::quant

#endif
