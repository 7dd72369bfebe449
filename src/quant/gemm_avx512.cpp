// Prompt tiles with AVX-512 VNNI (`vpdpbusd` on 256-bit registers, AVX-512 VL): the layout and
// the float steps of gemm_avx2.cpp, with the integer block sums formed by one instruction per 32
// byte products instead of AVX2's maddubs + madd + adds. Integer sums are exact either way, so the
// results stay bit-identical to vec_dot_rows (the AVX2 decode kernels).
//
// Q4_0: the nibbles (u8) times the int8 activations, four vpdpbusd per half of four blocks.
// Q8_0: int8 times int8 has no VNNI instruction; the activations are repacked as u8 y + 128
// (y ^ 0x80) and each block's sum starts at -128 * sum(w) (formed once per row and group), so
// sum((y + 128) w) - 128 sum(w) = sum(y w) with no sign trick per vector. Both formats use the
// block-transposed layout on 512-bit registers (below).
// The K-quants (Q4_K, Q5_K, Q6_K): the AVX2 tiles with vpdpwssd for the scale products (below).
#include <algorithm>
#include <cstring>
#include <span>
#include <vector>

#include "epwa/platform.hpp"
#include "epwa/quant.hpp"
#include "epwa/thread_scratch.hpp"
#include "quant/blocks.hpp"
#include "quant/kernels.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include "quant/avx512_begin.hpp"
#include "quant/gemm_layout.hpp"

namespace epwa::quant {
namespace {
using namespace simd;

// ---- Q4_0, block-transposed (512-bit registers) ------------------------------------------------
// Dword lane b of each half of a register holds four values of block b, so vpdpbusd sums them
// straight into lane b: a group of eight blocks is four 512-bit registers, register i holding
// value group kDwordOrder[i][0] (values 4j..4j+3) of blocks 0..7 in its low half and value group
// kDwordOrder[i][1] in its high half. The order lets a Q4_0 row fill two registers from one
// vpermt2d of its qs dwords (low nibbles of qs dword j are values 4j.., high nibbles values
// 16+4j..). Per (row, vector, group): four vpdpbusd from a start of -8 * sum(y) per block, one add
// of the two halves, and the decode kernel's float step on the eight block sums, which are
// already in block order (no hadd, no permute).
constexpr int kDwordOrder[4][2] = {{0, 1}, {2, 3}, {4, 5}, {6, 7}};
constexpr int64_t kTGroupBytes = 320;

// Q8: the values as u8 (y ^ 0x80) and no start (Q8_0's start comes from the row); else Q4_0's
// -8 * sum(y) per block.
template <bool Q8>
void repack_t(const PackedVector& x, uint8_t* dst) {
  const int64_t nb = x.size() / 32, groups = (nb + 7) / 8;
  alignas(64) int8_t part[256];
  // register i: dword j of blocks 0..3 (lanes 0..3) and dword k (lanes 8..11) from [b0 b1] and
  // [b2 b3]; the same for blocks 4..7 into lanes 4..7 and 12..15, merged by a mask
  for (int64_t g = 0; g < groups; ++g, dst += kTGroupBytes) {
    const int64_t have = nb - 8 * g < 8 ? nb - 8 * g : 8;
    const int8_t* q = x.qs() + 256 * g;
    if (have < 8) {
      std::memset(part, 0, sizeof part);
      std::memcpy(part, q, static_cast<size_t>(have) * 32);
      q = part;
    }
    const __m512i p0 = _mm512_loadu_si512(q), p1 = _mm512_loadu_si512(q + 64),
                  p2 = _mm512_loadu_si512(q + 128), p3 = _mm512_loadu_si512(q + 192);
    for (int i = 0; i < 4; ++i) {
      const int j = kDwordOrder[i][0], k = kDwordOrder[i][1];
      const __m512i lo = _mm512_setr_epi32(j, 8 + j, 16 + j, 24 + j, 0, 0, 0, 0, k, 8 + k, 16 + k,
                                           24 + k, 0, 0, 0, 0);
      const __m512i hi = _mm512_setr_epi32(0, 0, 0, 0, j, 8 + j, 16 + j, 24 + j, 0, 0, 0, 0, k,
                                           8 + k, 16 + k, 24 + k);
      const __m512i r = _mm512_mask_blend_epi32(0xF0F0, _mm512_permutex2var_epi32(p0, lo, p1),
                                                _mm512_permutex2var_epi32(p2, hi, p3));
      _mm512_store_si512(dst + 64 * i, Q8 ? _mm512_xor_si512(r, _mm512_set1_epi8(-128)) : r);
    }
    alignas(32) float dx[8];
    alignas(32) int32_t start[8];
    for (int b = 0; b < 8; ++b) {
      const bool in = b < have;
      dx[b] = in ? x.scales()[8 * g + b] : 0.0f;
      start[b] = in && !Q8 ? -8 * x.sums()[8 * g + b] : 0;
    }
    _mm256_store_ps(reinterpret_cast<float*>(dst + 256), _mm256_load_ps(dx));
    _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 288),
                       _mm256_load_si256(reinterpret_cast<const __m256i*>(start)));
  }
}

// The eight f16 scales of a group in block order, as floats.
template <size_t BYTES>
inline __m256 scales_natural(const std::byte* blk) {
  const auto h = [blk](int j) { return static_cast<uint64_t>(load_u16(blk + j * BYTES)); };
  const uint64_t lo = h(0) | h(1) << 16 | h(2) << 32 | h(3) << 48;
  const uint64_t hi = h(4) | h(5) << 16 | h(6) << 32 | h(7) << 48;
  return _mm256_cvtph_ps(
      _mm_insert_epi64(_mm_cvtsi64_si128(static_cast<int64_t>(lo)), static_cast<int64_t>(hi), 1));
}
inline __m512i load512_qs4(const std::byte* blk) {  // the qs of four consecutive blocks
  constexpr size_t B = Q4_0::bytes;
  const std::byte* q = blk + Q4_0::qs;
  __m512i r = _mm512_castsi128_si512(load128(q));
  r = _mm512_inserti32x4(r, load128(q + B), 1);
  r = _mm512_inserti32x4(r, load128(q + 2 * B), 2);
  return _mm512_inserti32x4(r, load128(q + 3 * B), 3);
}

// The unpacked weights of group g of a Q4_0 row (w: four registers) and its scales. Two
// vpermt2d gather qs dwords [0 | 1] and [2 | 3] of the eight blocks; their low nibbles are value
// groups [0 | 1] and [2 | 3], their high nibbles [4 | 5] and [6 | 7] (kDwordOrder).
inline __m256 unpack_q4_0_t(const std::byte* row, int64_t nb, int64_t g, std::byte* tail,
                            __m512i* w) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const std::byte* blk = group_blocks<Q4_0::bytes>(row, nb, g, tail);
  const __m512i a = load512_qs4(blk), b = load512_qs4(blk + 4 * Q4_0::bytes);
  for (int p = 0; p < 2; ++p) {
    const int j = 2 * p, k = 2 * p + 1;  // qs dwords j (low half) and k (high half)
    const __m512i idx = _mm512_setr_epi32(j, 4 + j, 8 + j, 12 + j, 16 + j, 20 + j, 24 + j, 28 + j,
                                          k, 4 + k, 8 + k, 12 + k, 16 + k, 20 + k, 24 + k, 28 + k);
    const __m512i q = _mm512_permutex2var_epi32(a, idx, b);
    w[p] = _mm512_and_si512(q, low4);
    w[2 + p] = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
  }
  return scales_natural<Q4_0::bytes>(blk);
}
struct InsertUnpack {  // unpack_q4_0_t for the tiles (below: the VBMI machines' byte permutes)
  static __m256 unpack(const std::byte* row, int64_t nb, int64_t g, std::byte* tail, __m512i* w) {
    return unpack_q4_0_t(row, nb, g, tail, w);
  }
};

// R rows against V vectors: each activation load serves R rows. One row per tile is bound by
// the activation loads (320 bytes per 256 products, from L2 once a pass's vectors outgrow L1).
// Every row gets the same operations whatever R and U (tested against the decode kernel to the
// bit); U::unpack gives a row group's four weight registers and scales in block order.
template <int R, int V, class U>
void tile_rows_q4_0_t(const std::byte* row, int64_t row_bytes, int64_t nb, const uint8_t* y,
                      int64_t ystride, float* out, int64_t ldo) {
  alignas(32) std::byte tail[R][8 * Q4_0::bytes];
  __m256 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  const int64_t groups = (nb + 7) / 8;
  for (int64_t g = 0; g < groups; ++g, y += kTGroupBytes) {
    __m512i w[R][4];
    __m256 dw[R];
    for (int r = 0; r < R; ++r) dw[r] = U::unpack(row + r * row_bytes, nb, g, tail[r], w[r]);
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const uint8_t* yv = y + v * ystride;
      const __m512i start =
          _mm512_zextsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i*>(yv + 288)));
      __m512i s[R];
      for (int r = 0; r < R; ++r) s[r] = start;
      for (int j = 0; j < 4; ++j) {
        const __m512i yj = _mm512_load_si512(yv + 64 * j);
        for (int r = 0; r < R; ++r) s[r] = _mm512_dpbusd_epi32(s[r], w[r][j], yj);
      }
      const __m256 dx = _mm256_load_ps(reinterpret_cast<const float*>(yv + 256));
      for (int r = 0; r < R; ++r) {
        const __m256i si =
            _mm256_add_epi32(_mm512_castsi512_si256(s[r]), _mm512_extracti64x4_epi64(s[r], 1));
        acc[r][v] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dx), _mm256_cvtepi32_ps(si), acc[r][v]);
      }
    }
  }
  for (int v = 0; v < V; ++v)
    for (int r = 0; r < R; ++r) out[v * ldo + r] = hsum(acc[r][v]);
}
// Four rows per tile: 4 x 4 weight registers, the 4 x V accumulators partly on the stack. Measured
// (one thread, 512 x 14336 Q4_0 against 128 vectors): 1 row 69, 2 rows 112, 3 rows 117, 4 rows
// 126, 6 rows 119, 8 rows 119 GMAC/s (docs/KERNELS.md).
constexpr int64_t kQ4_0Rows = 4;
// Sixteen vectors per pass: the weights are unpacked once per row, group and pass, so twice as
// many vectors halve that share (one thread, Q4_0 x 4096 / 14336 columns x 128 vectors: 8 per
// pass 126 / 128 GMAC/s, 16 per pass 146 / 144).
constexpr int kQ4_0MaxV = 16;
#define EPWA_Q4_0_TILES(T)                                                                   \
  {                                                                                          \
    T<1>, T<2>, T<3>, T<4>, T<5>, T<6>, T<7>, T<8>, T<9>, T<10>, T<11>, T<12>, T<13>, T<14>, \
        T<15>, T<16>                                                                         \
  }
template <int V>
void tile4_q4_0_t(const std::byte* row, int64_t row_bytes, int64_t nb, const uint8_t* y,
                  int64_t ystride, float* out, int64_t ldo) {
  tile_rows_q4_0_t<kQ4_0Rows, V, InsertUnpack>(row, row_bytes, nb, y, ystride, out, ldo);
}
constexpr TileRowsFn kQ4_0T4[kQ4_0MaxV] = EPWA_Q4_0_TILES(tile4_q4_0_t);

// One row (the last rows of a range).
template <int V>
void tile_q4_0_t(const std::byte* row, int64_t nb, const uint8_t* y, int64_t ystride, float* out,
                 int64_t ldo) {
  tile_rows_q4_0_t<1, V, InsertUnpack>(row, 0, nb, y, ystride, out, ldo);
}
constexpr TileFn kQ4_0T[kQ4_0MaxV] = EPWA_Q4_0_TILES(tile_q4_0_t);

// ---- Q4_0 decode (one vector), AVX-512 VBMI -----------------------------------------------------
// The AVX2 decode kernel spends ~10 instructions and ~3 cycles per block (15-20 GB/s per thread
// on this VM), so two threads only just keep up with memory (docs/KERNELS.md, issue 18). Here the
// vector is repacked once per call in the tiles' block-transposed layout (repack_t), and a row
// group of eight blocks (144 bytes, three loads) is transposed by byte permutes: two vpermt2b
// gather the qs dwords of blocks 0..6 as unpack_q4_0_t's two registers, a masked vpermb adds
// block 7's from the third load, and one more vpermt2b gathers the eight f16 scales. Then the
// tile's four vpdpbusd give the block sums in block order (no hadd tree), and the float step is
// the decode kernel's, so each row's result is the same to the bit. (The tile's own unpacking,
// 128-bit inserts and scalar scale loads, measured slower than AVX2 here: 12-14 against 15-20
// GB/s on one thread.)
#define EPWA_VBMI \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))

// Byte indices into a group's bytes 0..127 (two registers; bit 6 picks the second): q[p] places
// qs dword 2p (low half) and 2p + 1 (high half) of block b in dword lane b, as unpack_q4_0_t;
// block 7's qs (bytes 128..143) come from a third register through the same index's low six
// bits. d: the eight f16 scales (bytes 18b, 18b + 1) in the low 16 bytes.
struct DecodeIdx {
  alignas(64) uint8_t q[2][64];
  alignas(64) uint8_t d[64];
};
constexpr DecodeIdx make_decode_idx() {
  DecodeIdx x{};
  for (int p = 0; p < 2; ++p)
    for (int h = 0; h < 2; ++h)
      for (int b = 0; b < 8; ++b)
        for (int t = 0; t < 4; ++t) {
          const int src = 2 + 4 * (2 * p + h) + t;  // byte of the block
          x.q[p][32 * h + 4 * b + t] = static_cast<uint8_t>(b < 7 ? 18 * b + src : src - 2);
        }
  for (int b = 0; b < 8; ++b)
    for (int t = 0; t < 2; ++t) x.d[2 * b + t] = static_cast<uint8_t>(18 * b + t);
  return x;
}
constexpr DecodeIdx kDecodeIdx = make_decode_idx();
static_assert(8 * Q4_0::bytes == 144 && Q4_0::qs == 2);
constexpr __mmask64 kBlock7 = 0xF0000000F0000000ull;  // dword lane 7 of both halves
// The weights are prefetched 8 KiB ahead into L2 (the AVX2 kernel: 2 KiB into L1). With the AVX2
// kernel's prefetch this kernel decoded no faster than AVX2 (mixtral-l4 Q4_0 tg64, 2 threads,
// alternated rounds: 1.03x, and 0.89x under load); 8 KiB into L2 gave 1.33-1.36x in the same
// rounds, 16 KiB 1.13x (docs/KERNELS.md, issue 18). Row pairs (two streams, with the L1 prefetch)
// were slower in BM_matvec_mem.
constexpr int64_t kDecodePrefetchBytes = 8192;

// A row group's blocks (144 bytes at blk) as unpack_q4_0_t's four weight registers, and its
// scales, by the byte permutes above (idx: kDecodeIdx's three registers).
EPWA_VBMI inline __m256 transpose_q4_0(const std::byte* blk, const __m512i* idx, __m512i* w) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i r0 = _mm512_loadu_si512(blk), r1 = _mm512_loadu_si512(blk + 64);
  const __m512i r2 = _mm512_castsi128_si512(load128(blk + 128));
  for (int p = 0; p < 2; ++p) {
    const __m512i q =
        _mm512_mask_permutexvar_epi8(_mm512_permutex2var_epi8(r0, idx[p], r1), kBlock7, idx[p], r2);
    w[p] = _mm512_and_si512(q, low4);
    w[2 + p] = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
  }
  return _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutex2var_epi8(r0, idx[2], r1)));
}
struct ByteUnpack {
  EPWA_VBMI static __m256 unpack(const std::byte* row, int64_t nb, int64_t g, std::byte* tail,
                                 __m512i* w) {
    const __m512i idx[3] = {_mm512_load_si512(kDecodeIdx.q[0]), _mm512_load_si512(kDecodeIdx.q[1]),
                            _mm512_load_si512(kDecodeIdx.d)};
    return transpose_q4_0(group_blocks<Q4_0::bytes>(row, nb, g, tail), idx, w);
  }
};

// One row against the repacked vector y.
EPWA_VBMI float decode_row_q4_0(const std::byte* row, int64_t nb, const uint8_t* y) {
  const __m512i idx[3] = {_mm512_load_si512(kDecodeIdx.q[0]), _mm512_load_si512(kDecodeIdx.q[1]),
                          _mm512_load_si512(kDecodeIdx.d)};
  alignas(64) std::byte tail[8 * Q4_0::bytes];
  __m256 acc = _mm256_setzero_ps();
  const int64_t groups = (nb + 7) / 8;
  for (int64_t g = 0; g < groups; ++g, y += kTGroupBytes) {
    for (int64_t o = 0; o < int64_t{8 * Q4_0::bytes}; o += 64)
      _mm_prefetch(
          reinterpret_cast<const char*>(row + 8 * g * Q4_0::bytes + kDecodePrefetchBytes + o),
          _MM_HINT_T1);
    __m512i w[4];
    const __m256 dw = transpose_q4_0(group_blocks<Q4_0::bytes>(row, nb, g, tail), idx, w);
    __m512i s =
        _mm512_zextsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i*>(y + 288)));
    for (int j = 0; j < 4; ++j) s = _mm512_dpbusd_epi32(s, w[j], _mm512_load_si512(y + 64 * j));
    const __m256 dx = _mm256_load_ps(reinterpret_cast<const float*>(y + 256));
    const __m256i si = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
    acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(si), acc);
  }
  return hsum(acc);
}

EPWA_VBMI void rows_q4_0_vnni(const std::byte* w, int64_t row_bytes, const PackedVector& x,
                              int64_t r0, int64_t r1, float* out) {
  struct alignas(64) Line {
    uint8_t b[64];
  };
  static_assert(kTGroupBytes % 64 == 0);
  thread_local ThreadScratch<std::vector<Line>> buf_tls;
  std::vector<Line>& buf = *buf_tls;
  const int64_t nb = x.size() / 32, groups = (nb + 7) / 8;
  buf.resize(static_cast<size_t>(groups * kTGroupBytes / 64));
  uint8_t* y = buf.data()->b;
  repack_t<false>(x, y);
  for (int64_t r = r0; r < r1; ++r) out[r] = decode_row_q4_0(w + r * row_bytes, nb, y);
}

// The prompt tiles with the same byte permutes (flatten: the shared tile body is compiled here for
// VBMI, so ByteUnpack inlines into it; docs/KERNELS.md, "Q4_0 prompt tiles by byte permutes").
template <int V>
EPWA_VBMI __attribute__((flatten)) void tile4_q4_0_vbmi(const std::byte* row, int64_t row_bytes,
                                                        int64_t nb, const uint8_t* y,
                                                        int64_t ystride, float* out, int64_t ldo) {
  tile_rows_q4_0_t<kQ4_0Rows, V, ByteUnpack>(row, row_bytes, nb, y, ystride, out, ldo);
}
template <int V>
EPWA_VBMI __attribute__((flatten)) void tile_q4_0_vbmi(const std::byte* row, int64_t nb,
                                                       const uint8_t* y, int64_t ystride,
                                                       float* out, int64_t ldo) {
  tile_rows_q4_0_t<1, V, ByteUnpack>(row, 0, nb, y, ystride, out, ldo);
}
constexpr TileRowsFn kQ4_0T4B[kQ4_0MaxV] = EPWA_Q4_0_TILES(tile4_q4_0_vbmi);
constexpr TileFn kQ4_0TB[kQ4_0MaxV] = EPWA_Q4_0_TILES(tile_q4_0_vbmi);
#undef EPWA_VBMI

// ---- Q8_0, block-transposed (512-bit registers) ------------------------------------------------
// The Q4_0 layout above for Q8_0: the activations repacked the same way as u8 (y ^ 0x80, i.e.
// y + 128) with their scales; a row's group of eight blocks transposed into four registers, two
// vpermt2d and a blend each (dword j of the eight blocks in the low half, dword k in the high);
// per (row, group) the start -128 * sum(w) of each block lane, from four vpdpbusd of 128s with the
// halves added, which removes the + 128. Per (row, vector, group): four 512-bit vpdpbusd, one add
// of the halves, and the decode kernel's float step on block sums already in block order (the
// 256-bit tile needs eight vpdpbusd, an hadd and a permute).
inline __m256 unpack_q8_0_t(const std::byte* row, int64_t nb, int64_t g, std::byte* tail,
                            __m512i* w, __m512i& start) {
  constexpr size_t B = Q8_0::bytes;
  const std::byte* blk = group_blocks<B>(row, nb, g, tail);
  const auto two = [blk](int b) {  // the qs of blocks b and b + 1
    return _mm512_inserti64x4(_mm512_castsi256_si512(load256(blk + b * B + Q8_0::qs)),
                              load256(blk + (b + 1) * B + Q8_0::qs), 1);
  };
  const __m512i p0 = two(0), p1 = two(2), p2 = two(4), p3 = two(6);
  const __m512i u128 = _mm512_set1_epi8(-128);  // 128 as u8
  __m512i sum = _mm512_setzero_si512();
  for (int i = 0; i < 4; ++i) {
    const int j = kDwordOrder[i][0], k = kDwordOrder[i][1];
    const __m512i lo = _mm512_setr_epi32(j, 8 + j, 16 + j, 24 + j, 0, 0, 0, 0, k, 8 + k, 16 + k,
                                         24 + k, 0, 0, 0, 0);
    const __m512i hi = _mm512_setr_epi32(0, 0, 0, 0, j, 8 + j, 16 + j, 24 + j, 0, 0, 0, 0, k, 8 + k,
                                         16 + k, 24 + k);
    w[i] = _mm512_mask_blend_epi32(0xF0F0, _mm512_permutex2var_epi32(p0, lo, p1),
                                   _mm512_permutex2var_epi32(p2, hi, p3));
    sum = _mm512_dpbusd_epi32(sum, u128, w[i]);
  }
  const __m256i s =
      _mm256_add_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1));
  start = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), s));
  return scales_natural<B>(blk);
}

template <int R, int V>
void tile_rows_q8_0_t(const std::byte* row, int64_t row_bytes, int64_t nb, const uint8_t* y,
                      int64_t ystride, float* out, int64_t ldo) {
  alignas(32) std::byte tail[R][8 * Q8_0::bytes];
  __m256 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  const int64_t groups = (nb + 7) / 8;
  for (int64_t g = 0; g < groups; ++g, y += kTGroupBytes) {
    __m512i w[R][4], start[R];
    __m256 dw[R];
    for (int r = 0; r < R; ++r)
      dw[r] = unpack_q8_0_t(row + r * row_bytes, nb, g, tail[r], w[r], start[r]);
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const uint8_t* yv = y + v * ystride;
      __m512i s[R];
      for (int r = 0; r < R; ++r) s[r] = start[r];
      for (int j = 0; j < 4; ++j) {
        const __m512i yj = _mm512_load_si512(yv + 64 * j);
        for (int r = 0; r < R; ++r) s[r] = _mm512_dpbusd_epi32(s[r], yj, w[r][j]);
      }
      const __m256 dx = _mm256_load_ps(reinterpret_cast<const float*>(yv + 256));
      for (int r = 0; r < R; ++r) {
        const __m256i si =
            _mm256_add_epi32(_mm512_castsi512_si256(s[r]), _mm512_extracti64x4_epi64(s[r], 1));
        acc[r][v] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dx), _mm256_cvtepi32_ps(si), acc[r][v]);
      }
    }
  }
  for (int v = 0; v < V; ++v)
    for (int r = 0; r < R; ++r) out[v * ldo + r] = hsum(acc[r][v]);
}

const TileFormat kFmtQ4_0{32,     8,       kTGroupBytes, repack_t<false>,
                          kQ4_0T, kQ4_0T4, kQ4_0Rows,    kQ4_0MaxV};
const TileFormat kFmtQ4_0Vbmi{32,      8,        kTGroupBytes, repack_t<false>,
                              kQ4_0TB, kQ4_0T4B, kQ4_0Rows,    kQ4_0MaxV};
// Q8_0: the block-transposed tiles, three rows x 32 vectors per pass. Measured (one thread, best of
// 15 calls, GMAC/s on 1024 x 2048 / 2048 x 1024 x 64 vectors / 512 x 14336 x 128 vectors):
// gemm_layout.hpp's 256-bit group tiles (4 rows x 16) 110-114 / 105-107 / 109-116; these with
// 4 rows x 16 125 / 116 / 123-129, 2 x 16 119 / 114 / 120, 3 x 16 128-129 / 120 / 131-133,
// 6 x 16 125 / 116 / 127, 3 x 24 134 / 124 / 138, 4 x 32 139 / 110 / 139, 3 x 32 140 / 129 / 139
// (a row's weights are unpacked once per pass: longer passes halve that share).
constexpr int64_t kQ8_0Rows = 3;
constexpr int kQ8_0MaxV = 32;
template <int V>
void tile3_q8_0_t(const std::byte* row, int64_t row_bytes, int64_t nb, const uint8_t* y,
                  int64_t ystride, float* out, int64_t ldo) {
  tile_rows_q8_0_t<kQ8_0Rows, V>(row, row_bytes, nb, y, ystride, out, ldo);
}
template <int V>
void tile1_q8_0_t(const std::byte* row, int64_t nb, const uint8_t* y, int64_t ystride, float* out,
                  int64_t ldo) {
  tile_rows_q8_0_t<1, V>(row, 0, nb, y, ystride, out, ldo);
}
#define EPWA_Q8_0_TILES(T)                                                                         \
  {                                                                                                \
    T<1>, T<2>, T<3>, T<4>, T<5>, T<6>, T<7>, T<8>, T<9>, T<10>, T<11>, T<12>, T<13>, T<14>,       \
        T<15>, T<16>, T<17>, T<18>, T<19>, T<20>, T<21>, T<22>, T<23>, T<24>, T<25>, T<26>, T<27>, \
        T<28>, T<29>, T<30>, T<31>, T<32>                                                          \
  }
constexpr TileRowsFn kQ8_0R[kQ8_0MaxV] = EPWA_Q8_0_TILES(tile3_q8_0_t);
constexpr TileFn kQ8_0T[kQ8_0MaxV] = EPWA_Q8_0_TILES(tile1_q8_0_t);
#undef EPWA_Q8_0_TILES
const TileFormat kFmtQ8_0{32,     8,      kTGroupBytes, repack_t<true>,
                          kQ8_0T, kQ8_0R, kQ8_0Rows,    kQ8_0MaxV};

// ---- K-quants: gemm_avx2.cpp's super-block tiles with vpdpwssd ---------------------------------
// The AVX2 tiles (registers paired so one madd applies two sub-blocks' scales) with VNNI's
// vpdpwssd doing the madd and the int32 add in one instruction, and 16 vectors per pass. The
// int32 lane sums are the AVX2 tile's (exact integer sums), and the float step per row is the
// decode kernel's, so every value stays bit-identical to vec_dot_rows. Per (row, vector,
// super-block) 8 vpmaddubsw, 4 vpaddw and 4 vpdpwssd (AVX2: and 4 vpmaddwd + 4 vpaddd). On this
// machine (AMD EPYC, Zen 4 class) the tiles are bound by the multiply pipes, not by the activation
// loads: several rows per tile, two rows per 512-bit register and vpdpbusd pairs measured slower
// (docs/KERNELS.md, "Q4_K / Q5_K / Q6_K prompt tiles").

// Q4_K/Q5_K: the mins' term float(m_j * S_j) is one float multiply of m_j by the activations'
// sums of 32 stored as floats: |m S| <= 63 * 4064 < 2^24, so both factors and the product are
// exact floats and the product equals the AVX2 tile's float(madd(m, S)) to the bit.
inline void repack_vector_kf(const PackedVector& x, uint8_t* dst) {
  repack_vector_k(x, dst);
  const int64_t nsb = x.size() / 256;
  for (int64_t b = 0; b < nsb; ++b, dst += kSuperBytes) {
    float* s = reinterpret_cast<float*>(dst + 288);
    _mm256_storeu_ps(s, _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<__m256i*>(s))));
  }
}

template <bool FIVE, int V>
void tile_k_affine_vnni(const std::byte* row, int64_t nsb, const uint8_t* y, int64_t ystride,
                        float* out, int64_t ldo) {
  constexpr int64_t bytes = FIVE ? Q5_K::bytes : Q4_K::bytes;
  __m256 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nsb; ++b, y += kSuperBytes) {
    KAffineBlock k;
    unpack_k_affine<FIVE>(row + b * bytes, k);
    const __m256 mins = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(k.sm, 8)));
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      const uint8_t* yv = y + v * ystride;
      __m256i sumi = _mm256_setzero_si256();
      for (int c = 0; c < 4; ++c) {
        const __m256i p =
            _mm256_add_epi16(_mm256_maddubs_epi16(k.wa[c], load256(yv + 64 * c)),
                             _mm256_maddubs_epi16(k.wb[c], load256(yv + 64 * c + 32)));
        sumi = _mm256_dpwssd_epi32(sumi, p, k.sp[c]);
      }
      const __m256 dx = _mm256_loadu_ps(reinterpret_cast<const float*>(yv + 256));
      const __m256 sums = _mm256_loadu_ps(reinterpret_cast<const float*>(yv + 288));
      acc[v] = _mm256_fmadd_ps(_mm256_mul_ps(k.d, dx), _mm256_cvtepi32_ps(sumi), acc[v]);
      acc[v] = _mm256_fnmadd_ps(_mm256_mul_ps(k.dmin, dx), _mm256_mul_ps(mins, sums), acc[v]);
    }
  }
  for (int v = 0; v < V; ++v) out[v * ldo] = hsum(acc[v]);
}

// Q6_K: gemm_avx2.cpp's tile_q6_k; the -32 offset's start -32 * madd(sc, S16) is one vpdpwssd of
// the sums of 16 with the scales times -32 (|32 sc| <= 4096: int16), the same int32.
template <int V>
void tile_q6_k_vnni(const std::byte* row, int64_t nsb, const uint8_t* y, int64_t ystride,
                    float* out, int64_t ldo) {
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
    for (int j = 0; j < 8; ++j)
      scale[j] = _mm256_set_m128i(_mm_set1_epi16(sc[2 * j + 1]), _mm_set1_epi16(sc[2 * j]));
    __m256i qa[4], qb[4], sp[4], unused;
    for (int c = 0; c < 4; ++c) {
      pair_words(q[2 * c], q[2 * c + 1], qa[c], qb[c]);
      pair_words(scale[2 * c], scale[2 * c + 1], sp[c], unused);  // [s_a, s_b] per int32 lane
    }
    const __m256i sc32 = _mm256_sub_epi16(_mm256_setzero_si256(),
                                          _mm256_slli_epi16(_mm256_cvtepi8_epi16(load128(sc)), 5));
    const __m256 d = _mm256_set1_ps(f16(blk + Q6_K::d));
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      const uint8_t* yv = y + v * ystride;
      __m256i sumi = _mm256_dpwssd_epi32(_mm256_setzero_si256(), sc32, load256(yv + 288));
      for (int c = 0; c < 4; ++c) {
        const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(qa[c], load256(yv + 64 * c)),
                                           _mm256_maddubs_epi16(qb[c], load256(yv + 64 * c + 32)));
        sumi = _mm256_dpwssd_epi32(sumi, p, sp[c]);
      }
      // the decode kernel's float step: fma(d * dx, float(sumi), acc), so results are identical
      const __m256 ddx =
          _mm256_mul_ps(d, _mm256_loadu_ps(reinterpret_cast<const float*>(yv + 256)));
      acc[v] = _mm256_fmadd_ps(ddx, _mm256_cvtepi32_ps(sumi), acc[v]);
    }
  }
  for (int v = 0; v < V; ++v) out[v * ldo] = hsum(acc[v]);
}

// 16 vectors per pass (one thread, 512 x 4096 x 128 vectors: 8 and 16 per pass both 82-83
// GMAC/s; 16 as Q4_0).
constexpr int kKMaxV = 16;
template <int V>
void tile_q4_k_vnni(const std::byte* row, int64_t n, const uint8_t* y, int64_t ystride, float* out,
                    int64_t ldo) {
  tile_k_affine_vnni<false, V>(row, n, y, ystride, out, ldo);
}
template <int V>
void tile_q5_k_vnni(const std::byte* row, int64_t n, const uint8_t* y, int64_t ystride, float* out,
                    int64_t ldo) {
  tile_k_affine_vnni<true, V>(row, n, y, ystride, out, ldo);
}
constexpr TileFn kQ4_KV[kKMaxV] = EPWA_Q4_0_TILES(tile_q4_k_vnni);
constexpr TileFn kQ5_KV[kKMaxV] = EPWA_Q4_0_TILES(tile_q5_k_vnni);
constexpr TileFn kQ6_KV[kKMaxV] = EPWA_Q4_0_TILES(tile_q6_k_vnni);
#undef EPWA_Q4_0_TILES
const TileFormat kFmtQ4_K{256, 1, kSuperBytes, repack_vector_kf, kQ4_KV, nullptr, 1, kKMaxV};
const TileFormat kFmtQ5_K{256, 1, kSuperBytes, repack_vector_kf, kQ5_KV, nullptr, 1, kKMaxV};
const TileFormat kFmtQ6_K{256, 1, kSuperBytes, repack_vector_q6k, kQ6_KV, nullptr, 1, kKMaxV};

}  // namespace
}  // namespace epwa::quant

#include "quant/avx512_end.hpp"

namespace epwa::quant {
namespace {
template <const TileFormat* F>
void gemm_vnni(const std::byte* w, int64_t row_bytes, std::span<const PackedVector* const> xs,
               int64_t row_begin, int64_t row_end, float* out, int64_t out_stride) {
  run_tiles(*F, w, row_bytes, xs, row_begin, row_end, out, out_stride);
}
}  // namespace

RangeDot rows_dot_avx512vnni(DType t) {
  if (t == DType::MXFP4) return mxfp4_rows_avx512();
  // The byte permutes need AVX-512 VBMI (Zen 4, Ice Lake and later), beyond the VNNI level.
  return t == DType::Q4_0 && cpu_features().avx512vbmi ? rows_q4_0_vnni : nullptr;
}

const TileFormat* tile_format_avx512vnni(DType t, bool vbmi) {
  switch (t) {
    case DType::Q4_0:
      return vbmi ? &kFmtQ4_0Vbmi : &kFmtQ4_0;
    case DType::Q8_0:
      return &kFmtQ8_0;
    case DType::Q4_K:
      return &kFmtQ4_K;
    case DType::Q5_K:
      return &kFmtQ5_K;
    case DType::Q6_K:
      return &kFmtQ6_K;
    default:
      return nullptr;
  }
}

RowsMultiDot gemm_avx512vnni(DType t, bool vbmi) {
  switch (t) {
    case DType::Q4_0:
      return vbmi ? gemm_vnni<&kFmtQ4_0Vbmi> : gemm_vnni<&kFmtQ4_0>;
    case DType::Q8_0:
      return gemm_vnni<&kFmtQ8_0>;
    case DType::Q4_K:
      return gemm_vnni<&kFmtQ4_K>;
    case DType::Q5_K:
      return gemm_vnni<&kFmtQ5_K>;
    case DType::Q6_K:
      return gemm_vnni<&kFmtQ6_K>;
    case DType::MXFP4:
      return mxfp4_gemm_avx512();
    default:
      return nullptr;
  }
}

}  // namespace epwa::quant

#else

namespace epwa::quant {
RowsMultiDot gemm_avx512vnni(DType, bool) {
  return nullptr;
}
const TileFormat* tile_format_avx512vnni(DType, bool) {
  return nullptr;
}
RangeDot rows_dot_avx512vnni(DType) {
  return nullptr;
}
}  // namespace epwa::quant

#endif
