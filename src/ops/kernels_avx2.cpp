// AVX2 + FMA + F16C kernels. Compiled with a target pragma (not per-file flags) so that the build
// needs no special options; only reached after cpu_features() confirmed the three extensions.
// Everything below the pragma has internal linkage and uses no standard-library templates, so that
// no AVX2-compiled copy of a shared inline function can leak into the portable code.
#include "kernels.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <cstring>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

#include "quant/simd_avx2.hpp"

namespace epwa::ops {
namespace {
using simd::hsum;

// Mask of the first `n` (0..8) lanes, for maskload of a row's tail.
inline __m256i tail_mask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx);
}

inline __m256 load8_f32(const char* p) {
  return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
}
inline __m256 load8_f16(const char* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load8_bf16(const char* p) {
  const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}

// Dot product with four independent accumulators (hides FMA latency); the tail goes through a
// zero-padded copy of the last < 8 weights and a masked load of x.
template <int kBytes, __m256 (*Load)(const char*)>
inline float dot_avx2(const void* wv, const float* x, int64_t n) {
  const char* w = static_cast<const char*>(wv);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(Load(w + i * kBytes), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(Load(w + (i + 8) * kBytes), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(Load(w + (i + 16) * kBytes), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(Load(w + (i + 24) * kBytes), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(Load(w + i * kBytes), _mm256_loadu_ps(x + i), a0);
  if (i < n) {
    alignas(32) char buf[8 * kBytes] = {};
    std::memcpy(buf, w + i * kBytes, static_cast<size_t>((n - i) * kBytes));
    a1 = _mm256_fmadd_ps(Load(buf), _mm256_maskload_ps(x + i, tail_mask(n - i)), a1);
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

float dot_f32(const void* w, const float* x, int64_t n) {
  return dot_avx2<4, load8_f32>(w, x, n);
}
float dot_f16(const void* w, const float* x, int64_t n) {
  return dot_avx2<2, load8_f16>(w, x, n);
}
float dot_bf16(const void* w, const float* x, int64_t n) {
  return dot_avx2<2, load8_bf16>(w, x, n);
}

template <__m256 (*Load)(const char*)>
inline void convert_avx2(const void* srcv, float* dst, int64_t n) {
  const char* src = static_cast<const char*>(srcv);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, Load(src + i * 2));
  if (i < n) {
    alignas(32) char buf[16] = {};
    std::memcpy(buf, src + i * 2, static_cast<size_t>((n - i) * 2));
    _mm256_maskstore_ps(dst + i, tail_mask(n - i), Load(buf));
  }
}
void f16_to_f32_row(const void* s, float* d, int64_t n) {
  convert_avx2<load8_f16>(s, d, n);
}
void bf16_to_f32_row(const void* s, float* d, int64_t n) {
  convert_avx2<load8_bf16>(s, d, n);
}

// Transposes eight 8-lane rows in place: r[j] becomes lane j of every input row.
inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x20);
    r[j + 4] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x31);
  }
}

template <int kBytes, __m256 (*Load)(const char*)>
void pack_panel_t(const char* w, int64_t row_bytes, int64_t m, int64_t k, float* panel) {
  for (int64_t i0 = 0; i0 < kPanel; i0 += 8) {
    int64_t j = 0;
    for (; j + 8 <= k; j += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i)
        r[i] = i0 + i < m ? Load(w + (i0 + i) * row_bytes + j * kBytes) : _mm256_setzero_ps();
      transpose8(r);
      for (int c = 0; c < 8; ++c) _mm256_storeu_ps(panel + (j + c) * kPanel + i0, r[c]);
    }
    for (; j < k; ++j)  // the last < 8 columns, through a padded copy of each row's tail
      for (int i = 0; i < 8; ++i) {
        float v = 0.0f;
        if (i0 + i < m) {
          alignas(32) char buf[8 * kBytes] = {};
          std::memcpy(buf, w + (i0 + i) * row_bytes + j * kBytes, kBytes);
          v = _mm256_cvtss_f32(Load(buf));
        }
        panel[j * kPanel + i0 + i] = v;
      }
  }
}

void pack_panel(DType t, const std::byte* w, int64_t row_bytes, int64_t m, int64_t k,
                float* panel) {
  const char* p = reinterpret_cast<const char*>(w);
  if (t == DType::F32) return pack_panel_t<4, load8_f32>(p, row_bytes, m, k, panel);
  if (t == DType::F16) return pack_panel_t<2, load8_f16>(p, row_bytes, m, k, panel);
  pack_panel_t<2, load8_bf16>(p, row_bytes, m, k, panel);
}

// NT tokens x 16 rows in 2 * NT accumulators: per column j, two panel loads and NT broadcasts of
// x feed 2 * NT FMAs, so the loop is bound by the FMA units (NT = 6: 12 of 16 registers).
template <int NT>
void micro(const float* panel, int64_t m, const float* x, int64_t ldx, int64_t k, float* y,
           int64_t ldy, bool accumulate) {
  __m256 a0[NT], a1[NT];
  for (int t = 0; t < NT; ++t) a0[t] = a1[t] = _mm256_setzero_ps();
  const float* xt[NT];
  for (int t = 0; t < NT; ++t) xt[t] = x + t * ldx;
  for (int64_t j = 0; j < k; ++j) {
    const __m256 w0 = _mm256_loadu_ps(panel + j * kPanel);
    const __m256 w1 = _mm256_loadu_ps(panel + j * kPanel + 8);
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const __m256 b = _mm256_broadcast_ss(xt[t] + j);
      a0[t] = _mm256_fmadd_ps(w0, b, a0[t]);
      a1[t] = _mm256_fmadd_ps(w1, b, a1[t]);
    }
  }
  // Fully unrolled so that the accumulators stay registers (a loop over t indexing a0[t] makes
  // GCC keep them in memory and store them on every column: 2x slower).
  alignas(32) float buf[NT][kPanel];
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) {
    _mm256_store_ps(buf[t], a0[t]);
    _mm256_store_ps(buf[t] + 8, a1[t]);
  }
  for (int t = 0; t < NT; ++t) {
    float* out = y + t * ldy;
    if (m == kPanel) {
      __m256 r0 = _mm256_load_ps(buf[t]), r1 = _mm256_load_ps(buf[t] + 8);
      if (accumulate) {
        r0 = _mm256_add_ps(_mm256_loadu_ps(out), r0);
        r1 = _mm256_add_ps(_mm256_loadu_ps(out + 8), r1);
      }
      _mm256_storeu_ps(out, r0);
      _mm256_storeu_ps(out + 8, r1);
    } else {
      for (int64_t i = 0; i < m; ++i) out[i] = accumulate ? out[i] + buf[t][i] : buf[t][i];
    }
  }
}

constexpr int kNT = 6;
using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t,
                         bool);
const MicroFn kMicro[kNT] = {micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>};

void gemm_panel(const float* panel, int64_t m, const float* x, int64_t ldx, int64_t n, int64_t k,
                float* y, int64_t ldy, bool accumulate) {
  for (int64_t t = 0; t < n; t += kNT) {
    const int64_t nt = n - t < kNT ? n - t : kNT;
    kMicro[nt - 1](panel, m, x + t * ldx, ldx, k, y + t * ldy, ldy, accumulate);
  }
}

// ---- attention ----

// The four accumulators of dot_f32 for two f32 rows (keys) against the same q, loaded once, each
// key's accumulators updated exactly as dot_avx2 updates them; returns each key's
// (a0 + a1) + (a2 + a3), the vector that dot_avx2 passes to hsum.
inline void dot2_f32(const float* k0, const float* k1, const float* q, int64_t n, __m256& r0,
                     __m256& r1) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256 q0 = _mm256_loadu_ps(q + i), q1 = _mm256_loadu_ps(q + i + 8);
    const __m256 q2 = _mm256_loadu_ps(q + i + 16), q3 = _mm256_loadu_ps(q + i + 24);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + i), q0, a0);
    b0 = _mm256_fmadd_ps(_mm256_loadu_ps(k1 + i), q0, b0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + i + 8), q1, a1);
    b1 = _mm256_fmadd_ps(_mm256_loadu_ps(k1 + i + 8), q1, b1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + i + 16), q2, a2);
    b2 = _mm256_fmadd_ps(_mm256_loadu_ps(k1 + i + 16), q2, b2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + i + 24), q3, a3);
    b3 = _mm256_fmadd_ps(_mm256_loadu_ps(k1 + i + 24), q3, b3);
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 q0 = _mm256_loadu_ps(q + i);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + i), q0, a0);
    b0 = _mm256_fmadd_ps(_mm256_loadu_ps(k1 + i), q0, b0);
  }
  if (i < n) {  // masked-off lanes are zeros, as in dot_avx2's zero-padded copy
    const __m256i m = tail_mask(n - i);
    const __m256 qm = _mm256_maskload_ps(q + i, m);
    a1 = _mm256_fmadd_ps(_mm256_maskload_ps(k0 + i, m), qm, a1);
    b1 = _mm256_fmadd_ps(_mm256_maskload_ps(k1 + i, m), qm, b1);
  }
  r0 = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  r1 = _mm256_add_ps(_mm256_add_ps(b0, b1), _mm256_add_ps(b2, b3));
}

// The first two steps of hsum for four keys: lane pairs (i, i + 4), then (i, i + 2) of each key,
// giving [e0, o0, e2, o2 | e1, o1, e3, o3] with e = s0 + s2, o = s1 + s3 (s_i = r_i + r_{i+4}).
inline __m256 hsum4_partial(__m256 r0, __m256 r1, __m256 r2, __m256 r3) {
  const __m256 s01 =
      _mm256_add_ps(_mm256_permute2f128_ps(r0, r1, 0x20), _mm256_permute2f128_ps(r0, r1, 0x31));
  const __m256 s23 =
      _mm256_add_ps(_mm256_permute2f128_ps(r2, r3, 0x20), _mm256_permute2f128_ps(r2, r3, 0x31));
  return _mm256_add_ps(_mm256_shuffle_ps(s01, s23, 0x44), _mm256_shuffle_ps(s01, s23, 0xEE));
}

// Eight keys' dot_f32 at once: lane j is e_j + o_j, the very additions of hsum (float addition is
// commutative, so only which values are paired matters, not the operand order).
inline __m256 dot8_f32(const float* k, int64_t stride, const float* q, int64_t n) {
  __m256 r0, r1, r2, r3;
  dot2_f32(k, k + stride, q, n, r0, r1);
  dot2_f32(k + 2 * stride, k + 3 * stride, q, n, r2, r3);
  const __m256 x0 = hsum4_partial(r0, r1, r2, r3);
  dot2_f32(k + 4 * stride, k + 5 * stride, q, n, r0, r1);
  dot2_f32(k + 6 * stride, k + 7 * stride, q, n, r2, r3);
  const __m256 x1 = hsum4_partial(r0, r1, r2, r3);
  // [k0, k2, k4, k6 | k1, k3, k5, k7], then back to key order.
  const __m256 h = _mm256_add_ps(_mm256_shuffle_ps(x0, x1, 0x88), _mm256_shuffle_ps(x0, x1, 0xDD));
  return _mm256_permutevar8x32_ps(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

void attn_scores(const float* k, int64_t stride, int64_t n_keys, const float* q, int64_t n,
                 float scale, float* scores) {
  const __m256 vs = _mm256_set1_ps(scale);
  int64_t t = 0;
  for (; t + 8 <= n_keys; t += 8)
    _mm256_storeu_ps(scores + t, _mm256_mul_ps(dot8_f32(k + t * stride, stride, q, n), vs));
  for (; t < n_keys; ++t) scores[t] = dot_f32(k + t * stride, q, n) * scale;
}

// p * v as its own rounded value: the empty asm hides the product from GCC, which would otherwise
// contract the following add into an FMA (-ffp-contract=fast) and round differently from the
// scalar kernel.
inline __m256 product(__m256 p, __m256 v) {
  __m256 m = _mm256_mul_ps(p, v);
  asm("" : "+x"(m));
  return m;
}

// R registers (8R outputs) kept in registers across all keys.
template <int R>
inline void wsum_block(const float* p, const float* v, int64_t stride, int64_t n_keys, float* out,
                       bool accumulate) {
  __m256 acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    acc[r] = accumulate ? _mm256_loadu_ps(out + 8 * r) : _mm256_setzero_ps();
  for (int64_t t = 0; t < n_keys; ++t) {
    const __m256 pt = _mm256_broadcast_ss(p + t);
    const float* vt = v + t * stride;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      acc[r] = _mm256_add_ps(acc[r], product(pt, _mm256_loadu_ps(vt + 8 * r)));
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) _mm256_storeu_ps(out + 8 * r, acc[r]);
}

void attn_wsum(const float* p, const float* v, int64_t stride, int64_t n_keys, int64_t n,
               float* out, bool accumulate) {
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) wsum_block<8>(p, v + i, stride, n_keys, out + i, accumulate);
  for (; i + 8 <= n; i += 8) wsum_block<1>(p, v + i, stride, n_keys, out + i, accumulate);
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    __m256 acc = accumulate ? _mm256_maskload_ps(out + i, m) : _mm256_setzero_ps();
    for (int64_t t = 0; t < n_keys; ++t)
      acc = _mm256_add_ps(
          acc, product(_mm256_broadcast_ss(p + t), _mm256_maskload_ps(v + t * stride + i, m)));
    _mm256_maskstore_ps(out + i, m, acc);
  }
}

// ---- matmul for a few tokens ----

// Each row converted to f32 once (a bf16/f16 value widens exactly, so dot_f32 on the copy is
// dot_bf16/dot_f16 on the row), then two tokens per pass share its loads: dot2_f32 keeps each
// token's accumulators exactly as dot_avx2 would (the products commute), so every value equals
// matvec's to the bit.
void dot_rows(DType t, const std::byte* w, int64_t row_bytes, int64_t m, const float* x, int64_t n,
              int64_t k, float* y, int64_t ldy, float* scratch) {
  for (int64_t i = 0; i < m; ++i) {
    const std::byte* row = w + i * row_bytes;
    const float* r = scratch;
    if (t == DType::F32)
      r = reinterpret_cast<const float*>(row);
    else if (t == DType::F16)
      f16_to_f32_row(row, scratch, k);
    else
      bf16_to_f32_row(row, scratch, k);
    int64_t j = 0;
    for (; j + 2 <= n; j += 2) {
      __m256 r0, r1;
      dot2_f32(x + j * k, x + (j + 1) * k, r, k, r0, r1);
      y[j * ldy + i] = hsum(r0);
      y[(j + 1) * ldy + i] = hsum(r1);
    }
    if (j < n) y[j * ldy + i] = dot_f32(r, x + j * k, k);
  }
}

const Kernels kAvx2{dot_f32,  dot_f16,    dot_bf16,   f16_to_f32_row, bf16_to_f32_row,
                    dot_rows, pack_panel, gemm_panel, attn_scores,    attn_wsum};

}  // namespace
}  // namespace epwa::ops

#pragma GCC pop_options

namespace epwa::ops {
const Kernels* avx2_kernels() {
  return &kAvx2;
}
}  // namespace epwa::ops

#else

namespace epwa::ops {
const Kernels* avx2_kernels() {
  return nullptr;
}
}  // namespace epwa::ops

#endif
