// MXFP4 against f32 activations with 512-bit registers (the AVX-512 VNNI level; only AVX-512 F is
// used). A block becomes two registers of f32 weights: its 16 qs bytes zero-extended to 16 dwords
// index a 16-entry table of the doubled e2m1 values times the block's scale (`vpermps` reads the
// low 4 bits: the low nibbles are elements 0-15, the dwords shifted by 4 elements 16-31). Every
// such weight is exact in f32 (a value of at most two significant bits times a power of two), so
// no rounding happens before the products; a weight beyond f32's range is inf, as
// dequantize_row gives it.
//
// One arithmetic for every path, so prompt and decode agree to the bit: per (row, vector) one
// 16-lane accumulator takes fma(weights 0-15, x 0-15) then fma(weights 16-31, x 16-31) block by
// block, and its lanes are summed in one fixed order. Decode interleaves rows to hide the FMA
// latency; the prompt tiles hold kR rows x kV vectors of accumulators, so each unpacked block
// serves kV vectors and each loaded x serves kR rows.
#include <algorithm>
#include <array>
#include <span>
#include <utility>

#include "epwa/quant.hpp"
#include "quant/blocks.hpp"
#include "quant/kernels.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include "quant/avx512_begin.hpp"
#include "quant/simd_avx2.hpp"

namespace epwa::quant {
namespace {

// e8m0_half of every scale byte, and the doubled e2m1 values as floats.
struct Tables {
  alignas(64) float scale[256];
  alignas(64) float value[16];
};
constexpr Tables make_tables() {
  Tables t{};
  for (int e = 0; e < 256; ++e) {
    // 2^(e - 128); e = 0, 1 are the subnormals 2^-128, 2^-127 (as e8m0_half)
    double v = 1.0;
    for (int i = e; i < 128; ++i) v *= 0.5;
    for (int i = 128; i < e; ++i) v *= 2.0;
    t.scale[e] = static_cast<float>(v);
  }
  for (int i = 0; i < 16; ++i) t.value[i] = kMxfp4Values[i];
  return t;
}
constexpr Tables kTables = make_tables();

inline void unpack(const std::byte* blk, __m512& lo, __m512& hi) {
  const __m512 table = _mm512_mul_ps(_mm512_load_ps(kTables.value),
                                     _mm512_set1_ps(kTables.scale[u8(blk)[MXFP4::e]]));
  const __m512i codes =
      _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + MXFP4::qs)));
  lo = _mm512_permutexvar_ps(codes, table);
  hi = _mm512_permutexvar_ps(_mm512_srli_epi32(codes, 4), table);
}
inline float hsum16(__m512 v) {
  return simd::hsum(_mm256_add_ps(
      _mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

// Rows r (R of them, stride rb) against one vector, x of nb blocks.
template <int R>
void rows_dot(const std::byte* w, int64_t rb, const float* x, int64_t nb, float* out) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 xl = _mm512_loadu_ps(x + 32 * b), xh = _mm512_loadu_ps(x + 32 * b + 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      __m512 lo, hi;
      unpack(w + r * rb + b * MXFP4::bytes, lo, hi);
      acc[r] = _mm512_fmadd_ps(hi, xh, _mm512_fmadd_ps(lo, xl, acc[r]));
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum16(acc[r]);
}

float row_dot1(const std::byte* w, const PackedVector& x) {
  float out;
  rows_dot<1>(w, 0, x.f32(), x.size() / 32, &out);
  return out;
}

// Decode: eight rows at a time (eight independent FMA chains), then the rest one by one.
constexpr int kDecodeRows = 8;
void rows_range(const std::byte* w, int64_t rb, const PackedVector& x, int64_t row_begin,
                int64_t row_end, float* out) {
  const int64_t nb = x.size() / 32;
  int64_t r = row_begin;
  for (; r + kDecodeRows <= row_end; r += kDecodeRows)
    rows_dot<kDecodeRows>(w + r * rb, rb, x.f32(), nb, out + r);
  for (; r < row_end; ++r) rows_dot<1>(w + r * rb, rb, x.f32(), nb, out + r);
}

// Prompt tile: R rows x V vectors; out[v * ldo + r].
template <int R, int V>
void tile(const std::byte* w, int64_t rb, const float* const* x, int64_t nb, float* out,
          int64_t ldo) {
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m512 lo[R], hi[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) unpack(w + r * rb + b * MXFP4::bytes, lo[r], hi[r]);
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const __m512 xl = _mm512_loadu_ps(x[v] + 32 * b), xh = _mm512_loadu_ps(x[v] + 32 * b + 16);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
        acc[r][v] = _mm512_fmadd_ps(hi[r], xh, _mm512_fmadd_ps(lo[r], xl, acc[r][v]));
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) out[v * ldo + r] = hsum16(acc[r][v]);
}

// 4 x 5: 20 accumulators, 8 unpacked halves and the two x registers fit the 32 registers. One
// thread, 256 rows x 2880 x 160 vectors (Zen 4): 96-105 GFLOP/s (4 x 4: 92-95, 2 x 8: 75, 4 x 6
// and 4 x 8: 99-100), the AVX2 kernel one row x 4 vectors 52-54.
constexpr int kR = 4, kV = 5;
using TileFn = void (*)(const std::byte*, int64_t, const float* const*, int64_t, float*, int64_t);
template <int R, size_t... V>
constexpr std::array<TileFn, sizeof...(V)> tiles_of(std::index_sequence<V...>) {
  return {tile<R, static_cast<int>(V) + 1>...};
}
template <size_t... R>
constexpr std::array<std::array<TileFn, kV>, sizeof...(R)> tile_table(std::index_sequence<R...>) {
  return {tiles_of<static_cast<int>(R) + 1>(std::make_index_sequence<kV>())...};
}
// kTiles[r - 1][v - 1]: r rows by v vectors.
constexpr auto kTiles = tile_table(std::make_index_sequence<kR>());

void gemm(const std::byte* w, int64_t rb, std::span<const PackedVector* const> xs,
          int64_t row_begin, int64_t row_end, float* out, int64_t out_stride) {
  const int64_t nb = xs[0]->size() / 32;
  const auto nv = static_cast<int64_t>(xs.size());
  for (int64_t r = row_begin; r < row_end; r += kR) {
    const int64_t nr = std::min<int64_t>(kR, row_end - r);
    for (int64_t v = 0; v < nv; v += kV) {
      const int64_t nvv = std::min<int64_t>(kV, nv - v);
      const float* x[kV];
      for (int64_t j = 0; j < nvv; ++j) x[j] = xs[v + j]->f32();
      kTiles[nr - 1][nvv - 1](w + r * rb, rb, x, nb, out + v * out_stride + r, out_stride);
    }
  }
}

}  // namespace

RowDot mxfp4_row_avx512() {
  return row_dot1;
}
RangeDot mxfp4_rows_avx512() {
  return rows_range;
}
RowsMultiDot mxfp4_gemm_avx512() {
  return gemm;
}

}  // namespace epwa::quant

#include "quant/avx512_end.hpp"

#else

namespace epwa::quant {
RowDot mxfp4_row_avx512() {
  return nullptr;
}
RangeDot mxfp4_rows_avx512() {
  return nullptr;
}
RowsMultiDot mxfp4_gemm_avx512() {
  return nullptr;
}
}  // namespace epwa::quant

#endif
