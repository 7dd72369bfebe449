// Register-blocked multi-vector kernels for prompt processing (AVX2): one weight row against up to
// eight activation vectors per pass, four blocks of 32 values per step.
//
// Why this layout: AVX2 has no int8 dot-product instruction, so every (row, vector, block) costs a
// maddubs, a widening madd, an int -> float conversion and a scaled FMA. Here four blocks a, b, c,
// d share those steps: the activations of a group of four blocks are repacked once per call so that
// each 32-byte register holds 8 values of each block ([a c | b d] per 128-bit half), the weights
// are unpacked into the same order once per row and reused by all vectors, and one int32 vector
// then holds two lanes per block ([a a c c b b d d]), so one convert and two FMAs serve four
// blocks. Q4_0's unsigned nibbles (0..15) times int8 activations stay within int16 over the four
// maddubs (4 * 2 * 15 * 127 = 15240), so they are summed before the madd; Q4_0's -8 offset is
// folded into the float step through the activation block sums. Q8_0 uses the sign trick
// (|w| as u8 against y carrying w's sign) and sums after the madd.
#include <algorithm>
#include <cstring>
#include <vector>

#include "epwa/quant.hpp"
#include "epwa/thread_scratch.hpp"
#include "quant/blocks.hpp"
#include "quant/kernels.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

#include "quant/gemm_layout.hpp"

namespace epwa::quant {
namespace {
using namespace simd;

inline __m256i ones16() {
  return _mm256_set1_epi16(1);
}

// Q4_0: per half of four blocks the nibbles (0..15) times int8 activations are summed in int16
// (at most 4 * 2 * 15 * 127 = 15240), widened by one madd to [a a c c b b d d], and hadd_epi32 of
// the two halves gives the eight exact block sums; then 8 * sum(y) comes off in int32.
struct Q4_0Avx2 {
  static constexpr size_t kBytes = Q4_0::bytes;
  static Q4_0Group unpack(const std::byte* blk) { return Q4_0Group::of(blk); }
  static __m256i sums(const Q4_0Group& g, const uint8_t* yv) {
    __m256i h[2];
    for (int half = 0; half < 2; ++half) {
      const __m256i* wh = g.w + 4 * half;
      const uint8_t* yh = yv + 128 * half;
      const __m256i s16 =
          _mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(wh[0], load256(yh)),
                                            _mm256_maddubs_epi16(wh[1], load256(yh + 32))),
                           _mm256_add_epi16(_mm256_maddubs_epi16(wh[2], load256(yh + 64)),
                                            _mm256_maddubs_epi16(wh[3], load256(yh + 96))));
      h[half] = _mm256_madd_epi16(s16, ones16());
    }
    return _mm256_sub_epi32(_mm256_hadd_epi32(h[0], h[1]), load256(yv + 288));
  }
};

// Q8_0: the sign trick (|w| as u8 against y carrying w's sign); products reach 2 * 128 * 127 per
// int16 lane, so blocks are summed after the madd.
struct Q8_0Avx2 {
  static constexpr size_t kBytes = Q8_0::bytes;
  struct Group {
    __m256i w[8], aw[8];
  };
  static Group unpack(const std::byte* blk) {
    Group g;
    unpack_q8_0(blk, g.w);
    for (int j = 0; j < 8; ++j) g.aw[j] = _mm256_abs_epi8(g.w[j]);  // -128 -> 128 as u8
    return g;
  }
  static __m256i sums(const Group& g, const uint8_t* yv) {
    __m256i h[2];
    for (int half = 0; half < 2; ++half) {
      __m256i p[4];
      for (int j = 0; j < 4; ++j)
        p[j] = _mm256_madd_epi16(
            _mm256_maddubs_epi16(
                g.aw[4 * half + j],
                _mm256_sign_epi8(load256(yv + 128 * half + 32 * j), g.w[4 * half + j])),
            ones16());
      h[half] = _mm256_add_epi32(_mm256_add_epi32(p[0], p[1]), _mm256_add_epi32(p[2], p[3]));
    }
    return _mm256_hadd_epi32(h[0], h[1]);
  }
};

template <int V>
void tile_q6_k(const std::byte* row, int64_t nsb, const uint8_t* y, int64_t ystride, float* out,
               int64_t ldo) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(0x03);
  __m256 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nsb; ++b, y += kSuperBytes) {
    const std::byte* blk = row + b * Q6_K::bytes;
    const auto* sc = reinterpret_cast<const int8_t*>(blk + Q6_K::scales);
    __m256i q[8], scale[8];
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = u8(blk + Q6_K::ql) + 64 * h;
      const __m256i l0 = load256(ql), l1 = load256(ql + 32),
                    hi = load256(u8(blk + Q6_K::qh) + 32 * h);
      const auto high = [&](int shift) {
        return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hi, shift), low2), 4);
      };
      q[4 * h] = _mm256_or_si256(_mm256_and_si256(l0, low4), high(0));
      q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, low4), high(2));
      q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), high(4));
      q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4), high(6));
    }
    for (int k = 0; k < 8; ++k)
      scale[k] = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
    __m256i qa[4], qb[4], sp[4], unused;
    for (int c = 0; c < 4; ++c) {
      pair_words(q[2 * c], q[2 * c + 1], qa[c], qb[c]);
      pair_words(scale[2 * c], scale[2 * c + 1], sp[c], unused);  // [s_a, s_b] per int32 lane
    }
    const __m256i sc16 = _mm256_cvtepi8_epi16(load128(sc));
    const __m256 d = _mm256_set1_ps(f16(blk + Q6_K::d));
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const uint8_t* yv = y + v * ystride;
      __m256i sumi = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load256(yv + 288)), 5);
      sumi = _mm256_sub_epi32(_mm256_setzero_si256(), sumi);
      for (int c = 0; c < 4; ++c) {
        const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(qa[c], load256(yv + 64 * c)),
                                           _mm256_maddubs_epi16(qb[c], load256(yv + 64 * c + 32)));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sp[c]));
      }
      // the decode kernel's float step: fma(d * dx, float(sumi), acc), so results are identical
      const __m256 ddx =
          _mm256_mul_ps(d, _mm256_loadu_ps(reinterpret_cast<const float*>(yv + 256)));
      acc[v] = _mm256_fmadd_ps(ddx, _mm256_cvtepi32_ps(sumi), acc[v]);
    }
  }
  for (int v = 0; v < V; ++v) out[v * ldo] = hsum(acc[v]);
}

template <bool FIVE, int V>
void tile_k_affine(const std::byte* row, int64_t nsb, const uint8_t* y, int64_t ystride, float* out,
                   int64_t ldo) {
  constexpr int64_t bytes = FIVE ? Q5_K::bytes : Q4_K::bytes;
  __m256 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nsb; ++b, y += kSuperBytes) {
    KAffineBlock k;
    unpack_k_affine<FIVE>(row + b * bytes, k);
    // m0..m7 as int32 = int16 pairs (m, 0): madd with the sums of 32 (|S| <= 4064, int16) is the
    // decode kernel's m * S exactly
    const __m256i mins = _mm256_cvtepu8_epi32(_mm_srli_si128(k.sm, 8));
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const uint8_t* yv = y + v * ystride;
      __m256i sumi = _mm256_setzero_si256();
      for (int c = 0; c < 4; ++c) {
        const __m256i p =
            _mm256_add_epi16(_mm256_maddubs_epi16(k.wa[c], load256(yv + 64 * c)),
                             _mm256_maddubs_epi16(k.wb[c], load256(yv + 64 * c + 32)));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, k.sp[c]));
      }
      const __m256i msum = _mm256_madd_epi16(mins, load256(yv + 288));
      const __m256 dx = _mm256_loadu_ps(reinterpret_cast<const float*>(yv + 256));
      acc[v] = _mm256_fmadd_ps(_mm256_mul_ps(k.d, dx), _mm256_cvtepi32_ps(sumi), acc[v]);
      acc[v] = _mm256_fnmadd_ps(_mm256_mul_ps(k.dmin, dx), _mm256_cvtepi32_ps(msum), acc[v]);
    }
  }
  for (int v = 0; v < V; ++v) out[v * ldo] = hsum(acc[v]);
}

const TileFn kQ6_K[kMaxV] = {tile_q6_k<1>, tile_q6_k<2>, tile_q6_k<3>, tile_q6_k<4>,
                             tile_q6_k<5>, tile_q6_k<6>, tile_q6_k<7>, tile_q6_k<8>};
const TileFn kQ4_K[kMaxV] = {tile_k_affine<false, 1>, tile_k_affine<false, 2>,
                             tile_k_affine<false, 3>, tile_k_affine<false, 4>,
                             tile_k_affine<false, 5>, tile_k_affine<false, 6>,
                             tile_k_affine<false, 7>, tile_k_affine<false, 8>};
const TileFn kQ5_K[kMaxV] = {tile_k_affine<true, 1>, tile_k_affine<true, 2>, tile_k_affine<true, 3>,
                             tile_k_affine<true, 4>, tile_k_affine<true, 5>, tile_k_affine<true, 6>,
                             tile_k_affine<true, 7>, tile_k_affine<true, 8>};

void repack_q4_0(const PackedVector& x, uint8_t* dst) {
  repack_vector(x, true, false, dst);
}
void repack_q8_0(const PackedVector& x, uint8_t* dst) {
  repack_vector(x, false, false, dst);
}
const TileFormat kFmtQ4_0{32, 8, kGroupBytes, repack_q4_0, kGroupTiles<Q4_0Avx2>};
const TileFormat kFmtQ8_0{32, 8, kGroupBytes, repack_q8_0, kGroupTiles<Q8_0Avx2>};
const TileFormat kFmtQ6_K{256, 1, kSuperBytes, repack_vector_q6k, kQ6_K};
const TileFormat kFmtQ4_K{256, 1, kSuperBytes, repack_vector_k, kQ4_K};
const TileFormat kFmtQ5_K{256, 1, kSuperBytes, repack_vector_k, kQ5_K};

}  // namespace
}  // namespace epwa::quant

#pragma GCC pop_options

// The driver is portable code: it owns the scratch buffer (standard-library templates must not be
// instantiated under a target pragma) and only calls the kernel files' functions through f.
namespace epwa::quant {

int64_t tile_stride(const TileFormat& f, int64_t n) {
  const int64_t units = n / f.unit_values;  // 32-blocks or 256-super-blocks
  return (units + f.group_units - 1) / f.group_units * f.group_bytes;
}
void tile_repack(const TileFormat& f, const PackedVector& x, uint8_t* dst) {
  f.repack(x, dst);
}

void run_tile_passes(const TileFormat& f, const std::byte* w, int64_t row_bytes, const uint8_t* y,
                     int64_t count, int64_t stride, int64_t n, int64_t row_begin, int64_t row_end,
                     float* out, int64_t out_stride) {
  const int64_t units = n / f.unit_values, mv = f.max_v;
  for (int64_t s = 0; s < count; s += mv) {
    const int nv = static_cast<int>(std::min(mv, count - s));
    const TileFn tile = f.tiles[nv - 1];
    const uint8_t* ys = y + s * stride;
    float* o = out + s * out_stride;
    int64_t r = row_begin;
    if (f.tile_rows_fns) {
      const TileRowsFn tile_rows = f.tile_rows_fns[nv - 1];
      for (; r + f.tile_rows <= row_end; r += f.tile_rows)
        tile_rows(w + r * row_bytes, row_bytes, units, ys, stride, o + r, out_stride);
    }
    for (; r < row_end; ++r) tile(w + r * row_bytes, units, ys, stride, o + r, out_stride);
  }
}

void run_tiles(const TileFormat& f, const std::byte* w, int64_t row_bytes,
               std::span<const PackedVector* const> xs, int64_t row_begin, int64_t row_end,
               float* out, int64_t out_stride) {
  const int64_t n = xs[0]->size(), stride = tile_stride(f, n);
  if (n / f.unit_values == 0 || row_begin >= row_end) {
    for (size_t v = 0; v < xs.size(); ++v)
      for (int64_t r = row_begin; r < row_end; ++r)
        out[static_cast<int64_t>(v) * out_stride + r] = 0.0f;
    return;
  }
  // Vectors per repacked batch: ~256 KiB of activations stay in L2 while the row range streams
  // past them; each pass of max_v vectors stays in L1. Batches are whole passes, so the passes are
  // those of run_tile_passes over the whole set.
  const int64_t mv = f.max_v;
  const int64_t batch = std::max<int64_t>(mv, (256 << 10) / stride / mv * mv);
  thread_local ThreadScratch<std::vector<uint8_t>> ybuf_tls;
  std::vector<uint8_t>& ybuf = *ybuf_tls;
  for (size_t v0 = 0; v0 < xs.size(); v0 += static_cast<size_t>(batch)) {
    const size_t v1 = std::min(xs.size(), v0 + static_cast<size_t>(batch));
    // 64-byte aligned (group sizes are multiples of 64 where a format loads aligned registers)
    ybuf.resize((v1 - v0) * static_cast<size_t>(stride) + 64);
    uint8_t* const ybase =
        ybuf.data() + ((64 - reinterpret_cast<uintptr_t>(ybuf.data()) % 64) % 64);
    for (size_t v = v0; v < v1; ++v)
      f.repack(*xs[v], ybase + (v - v0) * static_cast<size_t>(stride));
    run_tile_passes(f, w, row_bytes, ybase, static_cast<int64_t>(v1 - v0), stride, n, row_begin,
                    row_end, out + static_cast<int64_t>(v0) * out_stride, out_stride);
  }
}

namespace {
template <const TileFormat* F>
void gemm_tiled(const std::byte* w, int64_t row_bytes, std::span<const PackedVector* const> xs,
                int64_t row_begin, int64_t row_end, float* out, int64_t out_stride) {
  run_tiles(*F, w, row_bytes, xs, row_begin, row_end, out, out_stride);
}
}  // namespace

const TileFormat* tile_format_avx2(DType t) {
  switch (t) {
    case DType::Q4_0:
      return &kFmtQ4_0;
    case DType::Q8_0:
      return &kFmtQ8_0;
    case DType::Q6_K:
      return &kFmtQ6_K;
    case DType::Q4_K:
      return &kFmtQ4_K;
    case DType::Q5_K:
      return &kFmtQ5_K;
    default:
      return nullptr;
  }
}

RowsMultiDot gemm_avx2(DType t) {
  switch (t) {
    case DType::Q4_0:
      return gemm_tiled<&kFmtQ4_0>;
    case DType::Q8_0:
      return gemm_tiled<&kFmtQ8_0>;
    case DType::Q6_K:
      return gemm_tiled<&kFmtQ6_K>;
    case DType::Q4_K:
      return gemm_tiled<&kFmtQ4_K>;
    case DType::Q5_K:
      return gemm_tiled<&kFmtQ5_K>;
    default:
      return nullptr;
  }
}

}  // namespace epwa::quant

#else

namespace epwa::quant {
RowsMultiDot gemm_avx2(DType) {
  return nullptr;
}
const TileFormat* tile_format_avx2(DType) {
  return nullptr;
}
// Without tile formats (tile_format_* give none) nothing reaches these.
int64_t tile_stride(const TileFormat&, int64_t) {
  throw Error("no prompt tiles in this build");
}
void tile_repack(const TileFormat&, const PackedVector&, uint8_t*) {
  throw Error("no prompt tiles in this build");
}
void run_tile_passes(const TileFormat&, const std::byte*, int64_t, const uint8_t*, int64_t, int64_t,
                     int64_t, int64_t, int64_t, float*, int64_t) {
  throw Error("no prompt tiles in this build");
}
}  // namespace epwa::quant

#endif
