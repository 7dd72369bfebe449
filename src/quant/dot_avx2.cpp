// AVX2 kernels (with FMA and F16C): integer dot products of unpacked weight bytes with int8
// activations through maddubs (u8 x s8 -> s16 pairs) and madd (s16 -> s32). Compiled for AVX2
// by a target pragma, called only when cpu_features() says the CPU has it.
#include <algorithm>
#include <bit>
#include <cstring>

#include "epwa/quant.hpp"
#include "quant/blocks.hpp"
#include "quant/kernels.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

#include "quant/simd_avx2.hpp"

namespace epwa::quant {
namespace {
using namespace simd;

// Every kernel is a template over R, the rows done at once: R independent accumulator chains and
// one load of the activations per block. Row r's arithmetic is the same for every R, so results do
// not depend on how callers group or split rows.

// F32/F16/BF16: widen 8 weights to f32, two accumulators per row.
template <int KIND>  // 0 f32, 1 f16, 2 bf16
inline __m256 load8(const std::byte* p) {
  if constexpr (KIND == 0) return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (KIND == 2)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}
template <int KIND>
inline float load1(const std::byte* p) {
  if constexpr (KIND == 0) return *reinterpret_cast<const float*>(p);
  const uint16_t h = load_u16(p);
  if constexpr (KIND == 2) return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
  return _cvtsh_ss(h);
}
template <int KIND, int R>
void dot_float(const std::byte* w, int64_t rb, const PackedVector& x, float* out) {
  constexpr int64_t es = KIND == 0 ? 4 : 2;
  const float* b = x.f32();
  const int64_t n = x.size();
  __m256 a0[R], a1[R];
  for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 x0 = _mm256_loadu_ps(b + i), x1 = _mm256_loadu_ps(b + i + 8);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      a0[r] = _mm256_fmadd_ps(load8<KIND>(w + r * rb + es * i), x0, a0[r]);
      a1[r] = _mm256_fmadd_ps(load8<KIND>(w + r * rb + es * (i + 8)), x1, a1[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = hsum(_mm256_add_ps(a0[r], a1[r]));
    for (int64_t j = i; j < n; ++j) s += load1<KIND>(w + r * rb + es * j) * b[j];
    out[r] = s;
  }
}

// Q8_0, Q4_0 and the other 32-value formats (Q4_1, Q5_0, Q5_1): eight blocks per step. Each block's
// products end as 8 int32 lanes; block_sums8 folds the eight blocks into one vector of exact int32
// block sums, so the float work per eight blocks is one f16x8 scale conversion, one multiply by the
// activation scales, one convert and one FMA, instead of a scalar f16 conversion, a broadcast and
// an FMA per block. Q4_0 keeps its nibbles unsigned (0..15, maddubs' unsigned operand) and
// subtracts 8 * sum(y) per block in int32, which is exact (docs/KERNELS.md); Q5_0 likewise with 16;
// Q4_1/Q5_1 add min * dx * sum(y) as one more FMA per eight blocks. The last nb % 8 blocks run the
// same code with zero lanes, so a row's result does not depend on R or on how rows are split.

// a = [b0 b1 b2 b3 | b0 b1 b2 b3] (two partial sums of blocks 0-3), b the same for blocks 4-7;
// returns the eight block sums in order.
inline __m256i block_sums8_pairs(__m256i a, __m256i b) {
  return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20),
                          _mm256_permute2x128_si256(a, b, 0x31));
}
// p[j] holds 8 partial int32 sums of block j; returns [sum p0, ..., sum p7].
inline __m256i block_sums8(const __m256i* p) {
  return block_sums8_pairs(
      _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3])),
      _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7])));
}

// p[j] holds 16 int16 partial sums of block j, small enough that sums of 8 of them fit int16;
// returns [sum p0, ..., sum p7] as int32.
inline __m256i block_sums8_i16(const __m256i* p) {
  const __m256i a = _mm256_hadd_epi16(_mm256_hadd_epi16(p[0], p[1]), _mm256_hadd_epi16(p[2], p[3]));
  const __m256i b = _mm256_hadd_epi16(_mm256_hadd_epi16(p[4], p[5]), _mm256_hadd_epi16(p[6], p[7]));
  // a = [b0 b0 b1 b1 b2 b2 b3 b3 | the same for values 16-31 of each block], b for blocks 4-7
  const __m256i one = _mm256_set1_epi16(1);
  return block_sums8_pairs(_mm256_madd_epi16(a, one), _mm256_madd_epi16(b, one));
}

// The f16 fields at p, p + S, ..., p + 7S as floats: assembled in general registers (the integer
// pipes are idle in these loops) and converted with one vcvtph2ps.
template <int64_t S>
inline __m256 f16x8(const std::byte* p) {
  const auto h = [p](int j) { return static_cast<uint64_t>(load_u16(p + j * S)); };
  const uint64_t lo = h(0) | h(1) << 16 | h(2) << 32 | h(3) << 48;
  const uint64_t hi = h(4) | h(5) << 16 | h(6) << 32 | h(7) << 48;
  return _mm256_cvtph_ps(
      _mm_insert_epi64(_mm_cvtsi64_si128(static_cast<int64_t>(lo)), static_cast<int64_t>(hi), 1));
}
// The same for the first m < 8 fields, the others 0.
template <int64_t S>
inline __m256 f16x8_part(const std::byte* p, int m) {
  uint16_t h[8] = {};
  for (int j = 0; j < m; ++j) h[j] = load_u16(p + j * S);
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
}

// Activation side of a group of 8 (or m) blocks starting at block i: scales; OFF * sums for the
// offset formats (Q4_0: 8, Q5_0: 16); dx * sums for the formats with a min (Q4_1/Q5_1).
struct ActGroup {
  __m256 dx;
  __m256i off;
  __m256 dxs;
};
template <int OFF, bool MIN>
inline ActGroup act_group(const PackedVector& x, int64_t i, int m) {
  ActGroup a{_mm256_setzero_ps(), _mm256_setzero_si256(), _mm256_setzero_ps()};
  __m256i sums;
  if (m == 8) {
    a.dx = _mm256_loadu_ps(x.scales() + i);
    sums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.sums() + i));
  } else {
    float d[8] = {};
    int32_t s[8] = {};
    for (int j = 0; j < m; ++j) d[j] = x.scales()[i + j], s[j] = x.sums()[i + j];
    a.dx = _mm256_loadu_ps(d);
    sums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s));
  }
  static_assert(std::has_single_bit(static_cast<unsigned>(OFF)) || OFF == 0);
  if constexpr (OFF != 0)
    a.off = _mm256_slli_epi32(sums, std::countr_zero(static_cast<unsigned>(OFF)));
  if constexpr (MIN) a.dxs = _mm256_mul_ps(a.dx, _mm256_cvtepi32_ps(sums));
  return a;
}

// Unpacked weights of one block, ready for Op::dot against y (Q8_0: sign trick operands). kOff:
// the value offset subtracted through the activation sums; kMin: the byte offset of an f16 min
// (0 = none), added as min * dx * sum(y).
// [low nibbles | high nibbles] of 16 bytes from one broadcast load (a load-unit op) and a per-lane
// shift: one shuffle-pipe op fewer than shift + vinserti128 (0.94 instead of 1.27 ns per block).
inline __m256i nibbles16_bcast(const std::byte* p) {
  const __m256i both =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4)),
                          _mm256_set1_epi8(0x0F));
}
// Q4_0's products stay int16 up to the block sums: a maddubs pair is at most 2 * 15 * 127 = 3810,
// and three pairwise additions (hadd16 tree) reach 8 * 3810 = 30480 < 32767.
struct Q4_0Op {
  static constexpr int64_t kBytes = Q4_0::bytes;
  static constexpr int kOff = 8;
  static constexpr size_t kMin = 0;
  static __m256i unpack(const std::byte* blk) { return nibbles16_bcast(blk + Q4_0::qs); }
  static __m256i dot(__m256i q, const int8_t* y) { return _mm256_maddubs_epi16(q, load256(y)); }
  static __m256i sums(const __m256i* p) { return block_sums8_i16(p); }
};
struct Q8_0Op {
  static constexpr int64_t kBytes = Q8_0::bytes;
  static constexpr int kOff = 0;
  static constexpr size_t kMin = 0;
  static __m256i unpack(const std::byte* blk) { return load256(blk + Q8_0::qs); }
  static __m256i dot(__m256i q, const int8_t* y) {
    return dot_u8s8(_mm256_sign_epi8(q, q), _mm256_sign_epi8(load256(y), q));
  }
  static __m256i sums(const __m256i* p) { return block_sums8(p); }
};
// The 4- and 5-bit formats with a fifth bit or a min: values up to 31 do not fit the int16 tree, so
// each block is widened by madd.
template <size_t M, size_t QH, size_t QS, size_t BYTES, int OFF>
struct SmallOp {
  static constexpr int64_t kBytes = BYTES;
  static constexpr int kOff = OFF;
  static constexpr size_t kMin = M;
  static __m256i unpack(const std::byte* blk) {
    __m256i q = nibbles16_bcast(blk + QS);
    if constexpr (QH != 0) q = _mm256_or_si256(q, fifth_bits(load_u32(blk + QH)));
    return q;
  }
  static __m256i dot(__m256i q, const int8_t* y) { return dot_u8s8(q, load256(y)); }
  static __m256i sums(const __m256i* p) { return block_sums8(p); }
};
// MXFP4 against f32 activations (its values are exact in f32, so the products are the float
// types'): a block's 32 codes become the doubled e2m1 integers by one shuffle and widen to f32
// (four registers, elements 0-7, 8-15, 16-23, 24-31); four FMAs with x give the block's sum, and
// one more adds it times the block scale 2^(e - 128) to the row's accumulator.
struct Mxfp4Block {
  __m256 v[4];
  __m256 d;
};
inline void mxfp4_unpack(const std::byte* blk, Mxfp4Block& k) {
  const __m256i q = mxfp4_values(nibbles16_bcast(blk + MXFP4::qs));
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  k.v[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
  k.v[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
  k.v[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
  k.v[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
  k.d = _mm256_set1_ps(e8m0_half(u8(blk)[MXFP4::e]));
}
inline __m256 mxfp4_dot(const Mxfp4Block& k, const float* x, __m256 acc) {
  __m256 s = _mm256_mul_ps(k.v[0], _mm256_loadu_ps(x));
  s = _mm256_fmadd_ps(k.v[1], _mm256_loadu_ps(x + 8), s);
  s = _mm256_fmadd_ps(k.v[2], _mm256_loadu_ps(x + 16), s);
  s = _mm256_fmadd_ps(k.v[3], _mm256_loadu_ps(x + 24), s);
  return _mm256_fmadd_ps(s, k.d, acc);
}
template <int R>
void dot_mxfp4(const std::byte* w, int64_t rb, const PackedVector& x, float* out) {
  const int64_t nb = x.size() / 32;
  for (int r = 0; r < R; ++r) {
    __m256 acc = _mm256_setzero_ps();
    const std::byte* row = w + r * rb;
    for (int64_t b = 0; b < nb; ++b) {
      Mxfp4Block k;
      mxfp4_unpack(row + b * MXFP4::bytes, k);
      acc = mxfp4_dot(k, x.f32() + 32 * b, acc);
    }
    out[r] = hsum(acc);
  }
}
// One row against V vectors, each block unpacked once (prompt processing).
template <int V>
void dot_mxfp4_v(const std::byte* w, const PackedVector* const* xs, float* out) {
  const int64_t nb = xs[0]->size() / 32;
  __m256 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    Mxfp4Block k;
    mxfp4_unpack(w + b * MXFP4::bytes, k);
    for (int v = 0; v < V; ++v) acc[v] = mxfp4_dot(k, xs[v]->f32() + 32 * b, acc[v]);
  }
  for (int v = 0; v < V; ++v) out[v] = hsum(acc[v]);
}

using Q4_1Op = SmallOp<Q4_1::m, 0, Q4_1::qs, Q4_1::bytes, 0>;
using Q5_0Op = SmallOp<0, Q5_0::qh, Q5_0::qs, Q5_0::bytes, 16>;
using Q5_1Op = SmallOp<Q5_1::m, Q5_1::qh, Q5_1::qs, Q5_1::bytes, 0>;

// The f16 fields at offset O of m blocks (all 8 when m == 8).
template <class Op, size_t O>
inline __m256 block_f16(const std::byte* blk, int m) {
  return m == 8 ? f16x8<Op::kBytes>(blk + O) : f16x8_part<Op::kBytes>(blk + O, m);
}
// Float step of a group: acc + dw * dx * s (+ min * dx * sum(y)).
template <class Op>
inline __m256 group_float(const std::byte* blk, int m, const ActGroup& a, __m256i s, __m256 acc) {
  if constexpr (Op::kOff != 0) s = _mm256_sub_epi32(s, a.off);
  acc = _mm256_fmadd_ps(_mm256_mul_ps(block_f16<Op, 0>(blk, m), a.dx), _mm256_cvtepi32_ps(s), acc);
  if constexpr (Op::kMin != 0) acc = _mm256_fmadd_ps(block_f16<Op, Op::kMin>(blk, m), a.dxs, acc);
  return acc;
}

// One row's contribution of m blocks (m == 8 in the main loop) starting at blk, block i.
template <class Op>
inline __m256 group_dot(const std::byte* blk, const int8_t* y, const ActGroup& a, int m,
                        __m256 acc) {
  __m256i p[8];
  for (int j = 0; j < 8; ++j)
    p[j] = j < m ? Op::dot(Op::unpack(blk + j * Op::kBytes), y + 32 * j) : _mm256_setzero_si256();
  return group_float<Op>(blk, m, a, Op::sums(p), acc);
}

// Software prefetch of the weights kPrefetchBytes ahead of a group of N bytes being read: one row
// is one sequential stream (and the next row follows it), and the hardware prefetcher alone left a
// thread at ~80% of the bandwidth it reaches with this (docs/history/PERF-issue9.md). Prefetches
// never fault, so running past the matrix end is harmless.
constexpr int64_t kPrefetchBytes = 2048;
template <int64_t N>
inline void prefetch_ahead(const std::byte* p) {
  for (int64_t o = 0; o < N; o += 64)
    _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + o), _MM_HINT_T0);
}

// The K-quant kernels prefetch 8 KiB ahead into L2, as the AVX-512 Q4_0 decode kernel does:
// mixtral-l4 Q4_K decode 1.07x the 2 KiB L1 prefetch over six alternating rounds (docs/RESULTS.md,
// "Q4_K decode").
constexpr int64_t kL2PrefetchBytes = 8192;
template <int64_t N>
inline void prefetch_l2(const std::byte* p) {
  for (int64_t o = 0; o < N; o += 64)
    _mm_prefetch(reinterpret_cast<const char*>(p + kL2PrefetchBytes + o), _MM_HINT_T1);
}

template <class Op, int R>
void dot_grouped(const std::byte* w, int64_t rb, const PackedVector& x, float* out) {
  const int64_t nb = x.size() / 32;
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= nb; i += 8) {
    const ActGroup a = act_group<Op::kOff, Op::kMin != 0>(x, i, 8);
    const int8_t* y = x.qs() + 32 * i;
    for (int r = 0; r < R; ++r) {
      const std::byte* blk = w + r * rb + i * Op::kBytes;
      prefetch_ahead<8 * Op::kBytes>(blk);
      acc[r] = group_dot<Op>(blk, y, a, 8, acc[r]);
    }
  }
  if (i < nb) {
    const int m = static_cast<int>(nb - i);
    const ActGroup a = act_group<Op::kOff, Op::kMin != 0>(x, i, m);
    for (int r = 0; r < R; ++r)
      acc[r] = group_dot<Op>(w + r * rb + i * Op::kBytes, x.qs() + 32 * i, a, m, acc[r]);
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

// The same arithmetic for one row against V vectors (each block unpacked once).
template <class Op, int V>
void dot_grouped_v(const std::byte* w, const PackedVector* const* xs, float* out) {
  const int64_t nb = xs[0]->size() / 32;
  __m256 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; i += 8) {
    const int m = static_cast<int>(std::min<int64_t>(8, nb - i));
    const std::byte* blk = w + i * Op::kBytes;
    __m256i q[8];
    for (int j = 0; j < m; ++j) q[j] = Op::unpack(blk + j * Op::kBytes);
    for (int v = 0; v < V; ++v) {
      const ActGroup a = act_group<Op::kOff, Op::kMin != 0>(*xs[v], i, m);
      const int8_t* y = xs[v]->qs() + 32 * i;
      __m256i p[8];
      for (int j = 0; j < 8; ++j) p[j] = j < m ? Op::dot(q[j], y + 32 * j) : _mm256_setzero_si256();
      acc[v] = group_float<Op>(blk, m, a, Op::sums(p), acc[v]);
    }
  }
  for (int v = 0; v < V; ++v) out[v] = hsum(acc[v]);
}

// Q4_K/Q5_K. Per super-block the weights are unpacked once (KAffineBlock) and then dotted with
// one activation vector (k_affine_dot); the R-row and V-vector kernels share both, so their
// results are identical. The 6-bit scales and mins are decoded with 32-bit integer operations and
// reach the vector unit as one register; each sub-block's scale is broadcast from it by a shuffle
// (no scalar-to-vector move per sub-block), and the mins' correction is one vector multiply with
// the activation sums of the eight sub-blocks.
template <bool FIVE>
struct KAffineBlock {
  __m256i v[8];  // sub-block values 0..15 (0..31 for Q5_K), u8
  __m256i sc;    // [s0..s7 | s0..s7] int16
  __m256i mins;  // m0..m7 int32
  __m128 dd;     // [d, dmin, ., .]
};

template <bool FIVE>
inline void k_affine_unpack(const std::byte* blk, KAffineBlock<FIVE>& k) {
  const uint8_t* q = u8(blk + Q4_K::scales);
  uint32_t u[3];
  std::memcpy(u, q, 12);
  // scale_min_k4 for four sub-blocks at once: bytes j of the 32-bit words are sub-blocks j, j + 4
  const uint32_t s03 = u[0] & 0x3f3f3f3f, m03 = u[1] & 0x3f3f3f3f;
  const uint32_t s47 = (u[2] & 0x0f0f0f0f) | ((u[0] >> 2) & 0x30303030);
  const uint32_t m47 = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 2) & 0x30303030);
  const __m128i sm = _mm_set_epi32(static_cast<int>(m47), static_cast<int>(m03),
                                   static_cast<int>(s47), static_cast<int>(s03));
  k.sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
  k.mins = _mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8));
  k.dd = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(load_u32(blk + Q4_K::d))));
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const uint8_t* qs = u8(blk + (FIVE ? Q5_K::qs : Q4_K::qs));
  __m256i qh;
  if constexpr (FIVE) qh = load256(blk + Q5_K::qh);
  for (int c = 0; c < 4; ++c) {
    const __m256i raw = load256(qs + 32 * c);
    k.v[2 * c] = _mm256_and_si256(raw, low4);
    k.v[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
    if constexpr (FIVE) {
      const __m256i one = _mm256_set1_epi8(1);
      k.v[2 * c] = _mm256_or_si256(
          k.v[2 * c], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
      k.v[2 * c + 1] = _mm256_or_si256(
          k.v[2 * c + 1],
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
    }
  }
}

// Super-block b of x against an unpacked block, accumulated into acc.
template <bool FIVE>
inline __m256 k_affine_dot(const KAffineBlock<FIVE>& k, const PackedVector& x, int64_t b,
                           __m256 acc) {
  const int8_t* y = x.qs() + 256 * b;
  __m256i sumi = _mm256_setzero_si256();
  for (int j = 0; j < 8; ++j) {
    // int16 lane pair 2j, 2j+1 of each 128-bit half holds s_j
    const __m256i sj =
        _mm256_shuffle_epi8(k.sc, _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * j)));
    sumi = _mm256_add_epi32(
        sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(k.v[j], load256(y + 32 * j)), sj));
  }
  // sums of 32 activations: [S0 S1 S4 S5 | S2 S3 S6 S7] from the 16 sums of 16, then in order
  const int32_t* bs = x.sums() + 16 * b;
  const __m256i s32 =
      _mm256_permute4x64_epi64(_mm256_hadd_epi32(load256(bs), load256(bs + 8)), 0xD8);
  const __m256i msum = _mm256_mullo_epi32(k.mins, s32);
  const __m128 f = _mm_mul_ps(k.dd, _mm_set1_ps(x.scales()[b]));  // [d dx, dmin dx]
  acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(f), _mm256_cvtepi32_ps(sumi), acc);
  return _mm256_fnmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(f)), _mm256_cvtepi32_ps(msum), acc);
}

template <bool FIVE, int R>
void dot_k_affine(const std::byte* w, int64_t rb, const PackedVector& x, float* out) {
  constexpr int64_t bytes = FIVE ? Q5_K::bytes : Q4_K::bytes;
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < x.size() / 256; ++b)
    for (int r = 0; r < R; ++r) {
      const std::byte* blk = w + r * rb + b * bytes;
      prefetch_l2<bytes>(blk);
      KAffineBlock<FIVE> k;
      k_affine_unpack(blk, k);
      acc[r] = k_affine_dot(k, x, b, acc[r]);
    }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

template <bool FIVE, int V>
void dot_k_affine_v(const std::byte* w, const PackedVector* const* xs, float* out) {
  constexpr int64_t bytes = FIVE ? Q5_K::bytes : Q4_K::bytes;
  __m256 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t b = 0; b < xs[0]->size() / 256; ++b) {
    KAffineBlock<FIVE> k;
    k_affine_unpack(w + b * bytes, k);
    for (int v = 0; v < V; ++v) acc[v] = k_affine_dot(k, *xs[v], b, acc[v]);
  }
  for (int v = 0; v < V; ++v) out[v] = hsum(acc[v]);
}

// Q6_K, structured as Q4_K: unpack once (Q6Block), dot with one vector (q6_k_dot). The 16 int8
// scales are widened with one instruction; each 32 values' pair of scales is broadcast from that
// register by a permute and a shuffle, and the -32 offset of every value is one madd of the scales
// with the activations' sums of 16.
struct Q6Block {
  __m256i q[8];  // values 32j..32j+31, 0..63, u8
  __m256i sc;    // s0..s15 int16
  float d;
};

inline void q6_k_unpack(const std::byte* blk, Q6Block& k) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(0x03);
  const uint8_t* ql = u8(blk + Q6_K::ql);
  const uint8_t* qh = u8(blk + Q6_K::qh);
  for (int h = 0; h < 2; ++h, ql += 64, qh += 32) {
    const __m256i l0 = load256(ql), l1 = load256(ql + 32), hi = load256(qh);
    const auto high = [&](int shift) {
      return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hi, shift), low2), 4);
    };
    k.q[4 * h] = _mm256_or_si256(_mm256_and_si256(l0, low4), high(0));
    k.q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, low4), high(2));
    k.q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), high(4));
    k.q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4), high(6));
  }
  k.sc =
      _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + Q6_K::scales)));
  k.d = f16(blk + Q6_K::d);
}

inline __m256 q6_k_dot(const Q6Block& k, const PackedVector& x, int64_t b, __m256 acc) {
  const int8_t* y = x.qs() + 256 * b;
  // low 128 bits: s_2j in every int16 lane (values 0-15 of group j), high: s_2j+1 (values 16-31)
  const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2,
                                          3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
  __m256i sumi = _mm256_setzero_si256();
  for (int j = 0; j < 8; ++j) {
    const __m256i sj =
        _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(k.sc, _mm256_set1_epi32(j)), spread);
    sumi = _mm256_add_epi32(
        sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(k.q[j], load256(y + 32 * j)), sj));
  }
  // sum_g s_g * (sum of activations g) * 32: packs interleaves 64-bit chunks, permute restores them
  const int32_t* bs = x.sums() + 16 * b;
  const __m256i bs16 =
      _mm256_permute4x64_epi64(_mm256_packs_epi32(load256(bs), load256(bs + 8)), 0xD8);
  sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(_mm256_madd_epi16(k.sc, bs16), 5));
  return _mm256_fmadd_ps(_mm256_set1_ps(k.d * x.scales()[b]), _mm256_cvtepi32_ps(sumi), acc);
}

template <int R>
void dot_q6_k(const std::byte* w, int64_t rb, const PackedVector& x, float* out) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < x.size() / 256; ++b)
    for (int r = 0; r < R; ++r) {
      const std::byte* blk = w + r * rb + b * Q6_K::bytes;
      prefetch_l2<Q6_K::bytes>(blk);
      Q6Block k;
      q6_k_unpack(blk, k);
      acc[r] = q6_k_dot(k, x, b, acc[r]);
    }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

template <int V>
void dot_q6_k_v(const std::byte* w, const PackedVector* const* xs, float* out) {
  __m256 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t b = 0; b < xs[0]->size() / 256; ++b) {
    Q6Block k;
    q6_k_unpack(w + b * Q6_K::bytes, k);
    for (int v = 0; v < V; ++v) acc[v] = q6_k_dot(k, *xs[v], b, acc[v]);
  }
  for (int v = 0; v < V; ++v) out[v] = hsum(acc[v]);
}

// One row through the R = 1 instance.
template <void (*F)(const std::byte*, int64_t, const PackedVector&, float*)>
float one_row(const std::byte* w, const PackedVector& x) {
  float out;
  F(w, 0, x, &out);
  return out;
}

// The kernels of type t for R rows.
template <int R>
RowsDot rows_kernel(DType t) {
  switch (t) {
    case DType::F32:
      return dot_float<0, R>;
    case DType::F16:
      return dot_float<1, R>;
    case DType::BF16:
      return dot_float<2, R>;
    case DType::Q8_0:
      return dot_grouped<Q8_0Op, R>;
    case DType::Q4_0:
      return dot_grouped<Q4_0Op, R>;
    case DType::Q4_1:
      return dot_grouped<Q4_1Op, R>;
    case DType::Q5_0:
      return dot_grouped<Q5_0Op, R>;
    case DType::Q5_1:
      return dot_grouped<Q5_1Op, R>;
    case DType::Q4_K:
      return dot_k_affine<false, R>;
    case DType::Q5_K:
      return dot_k_affine<true, R>;
    case DType::Q6_K:
      return dot_q6_k<R>;
    case DType::MXFP4:
      return dot_mxfp4<R>;
  }
  return nullptr;
}

}  // namespace

RowMultiDot row_dot4v_avx2(DType t) {
  switch (t) {
    case DType::Q8_0:
      return dot_grouped_v<Q8_0Op, 4>;
    case DType::Q4_0:
      return dot_grouped_v<Q4_0Op, 4>;
    case DType::Q4_1:
      return dot_grouped_v<Q4_1Op, 4>;
    case DType::Q5_0:
      return dot_grouped_v<Q5_0Op, 4>;
    case DType::Q5_1:
      return dot_grouped_v<Q5_1Op, 4>;
    case DType::Q4_K:
      return dot_k_affine_v<false, 4>;
    case DType::Q5_K:
      return dot_k_affine_v<true, 4>;
    case DType::Q6_K:
      return dot_q6_k_v<4>;
    case DType::MXFP4:
      return dot_mxfp4_v<4>;
    default:
      return nullptr;
  }
}

bool pack_q8_avx2(const float* x, int64_t n, int block, int sum_group, int8_t* qs, float* scales,
                  int32_t* sums) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  // packs_epi32/packs_epi16 interleave 128-bit lanes; this puts the 4-byte groups back in order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < n / block; ++b) {
    const float* xb = x + b * block;
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < block; i += 8)
      m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + i)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float d = _mm_cvtss_f32(h) / 127.0f;
    const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    scales[b] = d;
    for (int i = 0; i < block; i += 32) {
      __m256i v[4];
      for (int k = 0; k < 4; ++k)
        v[k] =
            _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 8 * k), id),
                                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      const __m256i p =
          _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + b * block + i),
                          _mm256_permutevar8x32_epi32(p, order));
    }
  }
  // sums of int8 groups: maddubs with ones widens to int16 pairs, madd to int32
  for (int64_t g = 0; g < n / sum_group; ++g) {
    const int8_t* q = qs + g * sum_group;
    __m128i acc = _mm_setzero_si128();
    for (int i = 0; i < sum_group; i += 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i));
      acc = _mm_add_epi32(
          acc, _mm_madd_epi16(_mm_maddubs_epi16(_mm_set1_epi8(1), v), _mm_set1_epi16(1)));
    }
    acc = _mm_add_epi32(acc, _mm_shuffle_epi32(acc, 0x4E));
    acc = _mm_add_epi32(acc, _mm_shuffle_epi32(acc, 0xB1));
    sums[g] = _mm_cvtsi128_si32(acc);
  }
  return true;
}

RowDot row_dot_avx2(DType t) {
  switch (t) {
    case DType::F32:
      return one_row<dot_float<0, 1>>;
    case DType::F16:
      return one_row<dot_float<1, 1>>;
    case DType::BF16:
      return one_row<dot_float<2, 1>>;
    case DType::Q8_0:
      return one_row<dot_grouped<Q8_0Op, 1>>;
    case DType::Q4_0:
      return one_row<dot_grouped<Q4_0Op, 1>>;
    case DType::Q4_1:
      return one_row<dot_grouped<Q4_1Op, 1>>;
    case DType::Q5_0:
      return one_row<dot_grouped<Q5_0Op, 1>>;
    case DType::Q5_1:
      return one_row<dot_grouped<Q5_1Op, 1>>;
    case DType::Q4_K:
      return one_row<dot_k_affine<false, 1>>;
    case DType::Q5_K:
      return one_row<dot_k_affine<true, 1>>;
    case DType::Q6_K:
      return one_row<dot_q6_k<1>>;
    case DType::MXFP4:
      return one_row<dot_mxfp4<1>>;
  }
  return nullptr;
}

// Measured (docs/QUANT.md): four rows at once pay for the float types, whose one-row loop is bound
// by FMA latency, but slow the integer kernels down (their one-row loop already overlaps blocks).
RowsDot rows4_dot_avx2(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 ? rows_kernel<4>(t) : nullptr;
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
