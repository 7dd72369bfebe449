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

const Kernels kAvx2{dot_f32,         dot_f16,    dot_bf16,  f16_to_f32_row,
                    bf16_to_f32_row, pack_panel, gemm_panel};

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
