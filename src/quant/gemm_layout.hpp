// The repacked activation layout shared by the prompt (multi-vector) tiles of every x86 level
// (gemm_avx2.cpp, gemm_avx512.cpp), and the portable driver that runs a format's tiles.
// Include only after a `#pragma GCC target(...)` that enables at least AVX2: the helpers have
// internal linkage, so each kernel file gets its own copy compiled for its own instruction set.
#pragma once

#include <immintrin.h>

#include <cstring>
#include <span>

#include "epwa/quant.hpp"
#include "quant/blocks.hpp"
#include "quant/simd_avx2.hpp"

namespace epwa::quant {

// One tile: out[v * ldo] = dot(row, vector v) for v < V vectors whose repacked data are
// `ystride` bytes apart; `units` is the row's number of 32-blocks (Q4_0/Q8_0) or super-blocks.
using TileFn = void (*)(const std::byte* row, int64_t units, const uint8_t* y, int64_t ystride,
                        float* out, int64_t ldo);
// A tile of TileFormat::tile_rows rows (row i at row + i * row_bytes): out[v * ldo + i] =
// dot(row i, vector v), each row's value bit-identical to the one-row tile's.
using TileRowsFn = void (*)(const std::byte* row, int64_t row_bytes, int64_t units,
                            const uint8_t* y, int64_t ystride, float* out, int64_t ldo);
// Repacks one vector for the tile functions of a format.
using RepackFn = void (*)(const PackedVector& x, uint8_t* dst);
inline constexpr int kMaxV = 8;  // vectors per pass: 8 accumulators
// A format's kernels: a repacked group covers `group_units` units in `group_bytes`;
// tiles[V - 1] handles V vectors.
struct TileFormat {
  int64_t unit_values, group_units, group_bytes;
  RepackFn repack;
  const TileFn* tiles;
  // Where a format has them, tiles of tile_rows rows (the last rows % tile_rows rows go through
  // `tiles`); tile_rows_fns[V - 1] handles V vectors.
  const TileRowsFn* tile_rows_fns = nullptr;
  int64_t tile_rows = 1;
  int max_v = kMaxV;  // vectors per pass: tiles[max_v - 1] exists
};
// vec_dot_rows_multi's contract (RowsMultiDot) for one format; defined in gemm_avx2.cpp (portable).
void run_tiles(const TileFormat& f, const std::byte* w, int64_t row_bytes,
               std::span<const PackedVector* const> xs, int64_t row_begin, int64_t row_end,
               float* out, int64_t out_stride);

namespace {
using namespace simd;

// Q4_0/Q8_0 work on groups of eight blocks. Repacked activations of a group: two halves of four
// blocks (4 x 32 bytes each, see interleave), then dx and Q4_0's 8 * sum(y) per block (int32),
// both in the lane order kLanes of the block sums the kernels form.
constexpr int64_t kGroupBytes = 256 + 32 + 32;
// Lane i of a group's block sums holds block kLanes[i] (what hadd_epi32 of two [a a c c b b d d]
// halves gives); natural_order() undoes it before the final horizontal sum.
constexpr int kLanes[8] = {0, 2, 4, 6, 1, 3, 5, 7};
inline __m256i natural_order() {
  return _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
}

// 32 bytes each from four 16-byte halves: [a c | b d] order, 8 bytes of each per 128-bit half.
// lo_x holds values 0..15 of block x; the result j holds values 8j..8j+7 of every block (j < 2).
inline void interleave(__m128i a, __m128i b, __m128i c, __m128i d, __m256i& r0, __m256i& r1) {
  const __m256i ab = _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1);
  const __m256i cd = _mm256_inserti128_si256(_mm256_castsi128_si256(c), d, 1);
  r0 = _mm256_unpacklo_epi64(ab, cd);
  r1 = _mm256_unpackhi_epi64(ab, cd);
}
inline __m128i load128(const void* p) {
  return _mm_loadu_si128(static_cast<const __m128i*>(p));
}
// The f16 scales of the eight blocks at blk (BYTES apart) as floats in kLanes order, assembled in
// general registers and converted with one vcvtph2ps (the same values as the decode kernel's).
template <size_t BYTES>
inline __m256 scales_in_lanes(const std::byte* blk) {
  const auto h = [blk](int j) { return static_cast<uint64_t>(load_u16(blk + j * BYTES)); };
  const uint64_t lo = h(0) | h(2) << 16 | h(4) << 32 | h(6) << 48;
  const uint64_t hi = h(1) | h(3) << 16 | h(5) << 32 | h(7) << 48;
  return _mm256_cvtph_ps(
      _mm_insert_epi64(_mm_cvtsi64_si128(static_cast<int64_t>(lo)), static_cast<int64_t>(hi), 1));
}

// One vector into the group layout. Blocks past the end are zeros (scale 0, as the decode
// kernel's zero lanes), so the kernels run whole groups. `offset`: store Q4_0's 8 * sum(y);
// `flip`: store y + 128 as u8 (y ^ 0x80) for kernels that multiply u8 activations.
inline void repack_vector(const PackedVector& x, bool offset, bool flip, uint8_t* dst) {
  const int64_t nb = x.size() / 32, groups = (nb + 7) / 8;
  alignas(32) static const int8_t zeros[32] = {};
  for (int64_t g = 0; g < groups; ++g, dst += kGroupBytes) {
    const int8_t* y[8];
    alignas(32) float dx[8];
    alignas(32) int32_t off[8];
    for (int j = 0; j < 8; ++j) {
      const int64_t b = 8 * g + j;
      y[j] = b < nb ? x.qs() + 32 * b : zeros;
      const int64_t bl = 8 * g + kLanes[j];
      dx[j] = bl < nb ? x.scales()[bl] : 0.0f;
      off[j] = bl < nb && offset ? 8 * x.sums()[bl] : 0;
    }
    for (int half = 0; half < 2; ++half) {
      const int8_t* const* q = y + 4 * half;
      __m256i v[4];
      interleave(load128(q[0]), load128(q[1]), load128(q[2]), load128(q[3]), v[0], v[1]);
      interleave(load128(q[0] + 16), load128(q[1] + 16), load128(q[2] + 16), load128(q[3] + 16),
                 v[2], v[3]);
      const __m256i sign = _mm256_set1_epi8(flip ? -128 : 0);
      for (int j = 0; j < 4; ++j)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 128 * half + 32 * j),
                            _mm256_xor_si256(v[j], sign));
    }
    _mm256_storeu_ps(reinterpret_cast<float*>(dst + 256), _mm256_load_ps(dx));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 288),
                        _mm256_load_si256(reinterpret_cast<const __m256i*>(off)));
  }
}

// The blocks of group g of a row, or a zero-padded copy of the last, partial group.
template <size_t BYTES>
inline const std::byte* group_blocks(const std::byte* row, int64_t nb, int64_t g, std::byte* tail) {
  const int64_t have = nb - 8 * g;
  if (have >= 8) return row + 8 * g * BYTES;
  std::memset(tail, 0, 8 * BYTES);
  std::memcpy(tail, row + 8 * g * BYTES, static_cast<size_t>(have) * BYTES);
  return tail;
}

// The eight weight registers of group g of a Q4_0 row: per half of four blocks, the low and high
// nibbles of bytes 0..7 and 8..15 (values 0-7, 8-15, 16-23, 24-31 of each block), as in AVX2.
inline void unpack_q4_0(const std::byte* blk, __m256i* w) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  for (int half = 0; half < 2; ++half) {
    const std::byte* b = blk + 4 * half * Q4_0::bytes + Q4_0::qs;
    __m256i raw0, raw1;
    interleave(load128(b), load128(b + Q4_0::bytes), load128(b + 2 * Q4_0::bytes),
               load128(b + 3 * Q4_0::bytes), raw0, raw1);
    w[4 * half] = _mm256_and_si256(raw0, low4);
    w[4 * half + 1] = _mm256_and_si256(raw1, low4);
    w[4 * half + 2] = _mm256_and_si256(_mm256_srli_epi16(raw0, 4), low4);
    w[4 * half + 3] = _mm256_and_si256(_mm256_srli_epi16(raw1, 4), low4);
  }
}

// The same for Q8_0: bytes 0-7, 8-15, 16-23, 24-31 of every block of each half.
inline void unpack_q8_0(const std::byte* blk, __m256i* w) {
  constexpr size_t B = Q8_0::bytes;
  for (int half = 0; half < 2; ++half) {
    const std::byte* b = blk + 4 * half * B + Q8_0::qs;
    interleave(load128(b), load128(b + B), load128(b + 2 * B), load128(b + 3 * B), w[4 * half],
               w[4 * half + 1]);
    interleave(load128(b + 16), load128(b + B + 16), load128(b + 2 * B + 16),
               load128(b + 3 * B + 16), w[4 * half + 2], w[4 * half + 3]);
  }
}

// The group loop of every Q4_0/Q8_0 tile: out[v * ldo] = dot(row, vector v) for V vectors whose
// groups are `ystride` bytes apart. Per group of eight blocks `F::unpack(blk)` prepares the row's
// weights once for all V vectors, and `F::sums(prepared, yv)` gives a vector's eight exact int32
// block sums in kLanes order; then the decode kernel's float step, fma(dw * dx, float(sum), acc)
// per block lane, and the block order restored before the horizontal sum, so the results are
// bit-identical to vec_dot_rows whatever instructions form the integer sums. F is a struct of
// static functions (not lambdas: GCC leaves a lambda's function-pointer thunk outside the target
// pragma).
template <int V, class F>
inline void tile_groups(const std::byte* row, int64_t nb, const uint8_t* y, int64_t ystride,
                        float* out, int64_t ldo) {
  alignas(32) std::byte tail[8 * F::kBytes];
  __m256 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
  const int64_t groups = (nb + 7) / 8;
  for (int64_t g = 0; g < groups; ++g, y += kGroupBytes) {
    const std::byte* blk = group_blocks<F::kBytes>(row, nb, g, tail);
    const auto w = F::unpack(blk);
    const __m256 dw = scales_in_lanes<F::kBytes>(blk);
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const uint8_t* yv = y + v * ystride;
      const __m256i s = F::sums(w, yv);
      const __m256 dx = _mm256_loadu_ps(reinterpret_cast<const float*>(yv + 256));
      acc[v] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(s), acc[v]);
    }
  }
  for (int v = 0; v < V; ++v)
    out[v * ldo] = hsum(_mm256_permutevar8x32_ps(acc[v], natural_order()));
}
// tile_groups for R rows at once (row i at row + i * row_bytes), each activation load serving
// the R rows (a pass's vectors outgrow L1 on long rows, and the one-row tile then re-reads them
// from L2 per row). Per row the same operations as tile_groups, so the same bits.
template <int R, int V, class F>
inline void tile_groups_rows(const std::byte* row, int64_t row_bytes, int64_t nb, const uint8_t* y,
                             int64_t ystride, float* out, int64_t ldo) {
  alignas(32) std::byte tail[R][8 * F::kBytes];
  __m256 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  const int64_t groups = (nb + 7) / 8;
  for (int64_t g = 0; g < groups; ++g, y += kGroupBytes) {
    decltype(F::unpack(row)) w[R];
    __m256 dw[R];
    for (int r = 0; r < R; ++r) {
      const std::byte* blk = group_blocks<F::kBytes>(row + r * row_bytes, nb, g, tail[r]);
      w[r] = F::unpack(blk);
      dw[r] = scales_in_lanes<F::kBytes>(blk);
    }
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const uint8_t* yv = y + v * ystride;
      const __m256 dx = _mm256_loadu_ps(reinterpret_cast<const float*>(yv + 256));
      for (int r = 0; r < R; ++r) {
        const __m256i s = F::sums(w[r], yv);
        acc[r][v] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dx), _mm256_cvtepi32_ps(s), acc[r][v]);
      }
    }
  }
  for (int v = 0; v < V; ++v)
    for (int r = 0; r < R; ++r)
      out[v * ldo + r] = hsum(_mm256_permutevar8x32_ps(acc[r][v], natural_order()));
}
// tile_groups for 1..kMaxV vectors, as TileFormat::tiles wants them.
template <class F>
constexpr TileFn kGroupTiles[kMaxV] = {tile_groups<1, F>, tile_groups<2, F>, tile_groups<3, F>,
                                       tile_groups<4, F>, tile_groups<5, F>, tile_groups<6, F>,
                                       tile_groups<7, F>, tile_groups<8, F>};
// A Q4_0 group's weight registers, as unpack_q4_0 leaves them.
struct Q4_0Group {
  __m256i w[8];
  static Q4_0Group of(const std::byte* blk) {
    Q4_0Group r;
    unpack_q4_0(blk, r.w);
    return r;
  }
};

// Super-block formats: one repacked unit per 256 values.
constexpr int64_t kSuperBytes = 256 + 32 + 32;

// The super-block tiles share one trick. The decode kernels form, per 32 values in a register,
// maddubs (int16 pairs) and a madd by that register's scales, so int32 lane i holds the sum over
// registers of s * P[i], P[i] the dot of the lane's 4 values. Two registers a, b share those steps
// here: A holds in int32 lane i values 4i, 4i+1 of a and then of b, B values 4i+2, 4i+3 (the
// activations are repacked the same way), so maddubs(A) + maddubs(B) in int16 is [P_a[i], P_b[i]]
// per lane, and one madd with [s_a, s_b] gives exactly the decode kernel's lane contents: 3
// multiplies per pair of registers instead of 4, bit-identical results. The int16 sums must not
// overflow: 4 * 63 * 127 = 32004 for Q6_K, 4 * 31 * 127 = 15748 for Q5_K.

// Per int32 lane i: [word 2i of a, word 2i of b] and [word 2i+1 of a, word 2i+1 of b].
inline void pair_words(__m256i a, __m256i b, __m256i& even, __m256i& odd) {
  even = _mm256_blend_epi16(a, _mm256_slli_epi32(b, 16), 0xAA);
  odd = _mm256_blend_epi16(_mm256_srli_epi32(a, 16), b, 0xAA);
}

// 256 activations in pair order: registers 2c and 2c+1 (values 64c..64c+63) as A then B.
inline void repack_pairs(const int8_t* y, uint8_t* dst) {
  for (int c = 0; c < 4; ++c) {
    __m256i e, o;
    pair_words(load256(y + 64 * c), load256(y + 64 * c + 32), e, o);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 64 * c), e);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 64 * c + 32), o);
  }
}

// ---- Q6_K: super-blocks of 256, 6-bit values (q - 32), one int8 scale per 16 ------------------
// The decode kernel's unpacking (32 values and two scales per register), registers paired as
// above; the repacked vector is the values in pair order, then dx (8 copies) and the 16 sums of
// 16 as int16 (|sum| <= 2032): the -32 offset of every value is one madd of those sums with the
// row's scales.
inline void repack_vector_q6k(const PackedVector& x, uint8_t* dst) {
  const int64_t nsb = x.size() / 256;
  for (int64_t b = 0; b < nsb; ++b, dst += kSuperBytes) {
    repack_pairs(x.qs() + 256 * b, dst);
    _mm256_storeu_ps(reinterpret_cast<float*>(dst + 256), _mm256_set1_ps(x.scales()[b]));
    const __m256i s0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.sums() + 16 * b));
    const __m256i s1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.sums() + 16 * b + 8));
    // packs interleaves 128-bit lanes: [s0 lo, s1 lo, s0 hi, s1 hi] -> reorder to sums 0..15
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(s0, s1), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 288), p);
  }
}

// ---- Q4_K/Q5_K: super-blocks of 256, 8 sub-blocks of 32 with 6-bit scales and mins ----------
// Paired registers: the two sub-blocks of a qs chunk (2c: low nibbles, 2c+1: high), scales
// [s_2c, s_2c+1]; the decode kernel's scale/min decoding and float step. The repacked vector: the
// values in pair order, then dx (8 copies) and the eight sums of 32 as int32.

// One super-block of a Q4_K (FIVE: Q5_K) row unpacked for the tiles: the decode kernel's 6-bit
// scale / min decoding (bytes j of the words are sub-blocks j, j + 4), d and dmin broadcast, the
// values of each qs chunk c paired (wa, wb) with their scales (sp: int16 words alternating s_2c,
// s_2c+1). `sm` keeps the scales s0..s7 in bytes 0-7 and the mins m0..m7 in bytes 8-15.
struct KAffineBlock {
  __m128i sm;
  __m256 d, dmin;
  __m256i wa[4], wb[4], sp[4];
};

template <bool FIVE>
inline void unpack_k_affine(const std::byte* blk, KAffineBlock& k) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  uint32_t u[3];
  std::memcpy(u, blk + Q4_K::scales, 12);
  const uint32_t s03 = u[0] & 0x3f3f3f3f, m03 = u[1] & 0x3f3f3f3f;
  const uint32_t s47 = (u[2] & 0x0f0f0f0f) | ((u[0] >> 2) & 0x30303030);
  const uint32_t m47 = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 2) & 0x30303030);
  k.sm = _mm_set_epi32(static_cast<int>(m47), static_cast<int>(m03), static_cast<int>(s47),
                       static_cast<int>(s03));
  const __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(k.sm));  // [s0..s7 | s0..s7]
  const __m128 dd = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(load_u32(blk + Q4_K::d))));
  k.d = _mm256_broadcastss_ps(dd);
  k.dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dd));
  const uint8_t* qs = u8(blk + (FIVE ? Q5_K::qs : Q4_K::qs));
  __m256i qh;
  if constexpr (FIVE) qh = load256(blk + Q5_K::qh);
  for (int c = 0; c < 4; ++c) {
    const __m256i raw = load256(qs + 32 * c);
    __m256i lo = _mm256_and_si256(raw, low4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
    if constexpr (FIVE) {
      const __m256i one = _mm256_set1_epi8(1);
      lo = _mm256_or_si256(
          lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
      hi = _mm256_or_si256(
          hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
    }
    pair_words(lo, hi, k.wa[c], k.wb[c]);
    // bytes 4c..4c+3 of each half of sc
    k.sp[c] = _mm256_shuffle_epi8(sc, _mm256_set1_epi32(0x03020100 + 0x04040404 * c));
  }
}

inline void repack_vector_k(const PackedVector& x, uint8_t* dst) {
  const int64_t nsb = x.size() / 256;
  for (int64_t b = 0; b < nsb; ++b, dst += kSuperBytes) {
    repack_pairs(x.qs() + 256 * b, dst);
    _mm256_storeu_ps(reinterpret_cast<float*>(dst + 256), _mm256_set1_ps(x.scales()[b]));
    // sums of 32 from the 16 sums of 16: hadd gives [S0 S1 S4 S5 | S2 S3 S6 S7], permute orders
    const int32_t* bs = x.sums() + 16 * b;
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(dst + 288),
        _mm256_permute4x64_epi64(_mm256_hadd_epi32(load256(bs), load256(bs + 8)), 0xD8));
  }
}

}  // namespace
}  // namespace epwa::quant
