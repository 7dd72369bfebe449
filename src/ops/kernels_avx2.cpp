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

// MR weight rows x NR tokens of dot products over k, all kept in registers: each loaded weight
// vector serves NR tokens and each token vector MR rows, so the loop is bound by FMAs, not loads.
template <int MR, int NR>
void micro(const float* w, int64_t ldw, const float* x, int64_t ldx, int64_t k, float* y,
           int64_t ldy, bool accumulate) {
  __m256 acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int t = 0; t < NR; ++t) acc[r][t] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    __m256 wv[MR];
    for (int r = 0; r < MR; ++r) wv[r] = _mm256_loadu_ps(w + r * ldw + i);
    for (int t = 0; t < NR; ++t) {
      const __m256 xv = _mm256_loadu_ps(x + t * ldx + i);
      for (int r = 0; r < MR; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  if (i < k) {
    const __m256i m = tail_mask(k - i);
    __m256 wv[MR];
    for (int r = 0; r < MR; ++r) wv[r] = _mm256_maskload_ps(w + r * ldw + i, m);
    for (int t = 0; t < NR; ++t) {
      const __m256 xv = _mm256_maskload_ps(x + t * ldx + i, m);
      for (int r = 0; r < MR; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  for (int t = 0; t < NR; ++t)
    for (int r = 0; r < MR; ++r) {
      float* out = y + t * ldy + r;
      const float s = hsum(acc[r][t]);
      *out = accumulate ? *out + s : s;
    }
}

constexpr int kMR = 4, kNR = 3;
using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t,
                         bool);
// kMicro[mr - 1][nr - 1] handles the full blocks and the edges.
const MicroFn kMicro[kMR][kNR] = {
    {micro<1, 1>, micro<1, 2>, micro<1, 3>},
    {micro<2, 1>, micro<2, 2>, micro<2, 3>},
    {micro<3, 1>, micro<3, 2>, micro<3, 3>},
    {micro<4, 1>, micro<4, 2>, micro<4, 3>},
};

void gemm_nt(const float* w, int64_t ldw, int64_t m, const float* x, int64_t ldx, int64_t n,
             int64_t k, float* y, int64_t ldy, bool accumulate) {
  for (int64_t r = 0; r < m; r += kMR) {
    const int64_t mr = m - r < kMR ? m - r : kMR;
    for (int64_t t = 0; t < n; t += kNR) {
      const int64_t nr = n - t < kNR ? n - t : kNR;
      kMicro[mr - 1][nr - 1](w + r * ldw, ldw, x + t * ldx, ldx, k, y + t * ldy + r, ldy,
                             accumulate);
    }
  }
}

const Kernels kAvx2{dot_f32, dot_f16, dot_bf16, f16_to_f32_row, bf16_to_f32_row, gemm_nt};

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
