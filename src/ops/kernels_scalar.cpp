// Portable kernels: the reference for the SIMD paths and the fallback on CPUs without AVX2.
#include <cstring>
#include <vector>

#include "epwa/half.hpp"
#include "kernels.hpp"

namespace epwa::ops {
namespace {

// Stored rows may sit at any byte offset of a mapped file: read through memcpy.
inline float load_f32(const void* p, int64_t i) {
  float v;
  std::memcpy(&v, static_cast<const char*>(p) + i * 4, 4);
  return v;
}
inline uint16_t load_u16(const void* p, int64_t i) {
  uint16_t v;
  std::memcpy(&v, static_cast<const char*>(p) + i * 2, 2);
  return v;
}

// f16 -> f32 through a 256 KB table: the bit-exact converter of half.hpp branches on the exponent,
// which made the scalar f16 matvec 8x slower than f32.
const float* f16_table() {
  static const std::vector<float> t = [] {
    std::vector<float> v(65536);
    for (uint32_t i = 0; i < 65536; ++i) v[i] = f16_to_f32(static_cast<uint16_t>(i));
    return v;
  }();
  return t.data();
}

// Eight partial sums, combined pairwise: the same shape of rounding as the SIMD paths, so the two
// stay close even for long rows.
template <class Load>
float dot_generic(Load load, const float* x, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += load(i + j) * x[i + j];
  for (; i < n; ++i) acc[i & 7] += load(i) * x[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

float dot_f32(const void* w, const float* x, int64_t n) {
  return dot_generic([w](int64_t i) { return load_f32(w, i); }, x, n);
}
float dot_f16(const void* w, const float* x, int64_t n) {
  const float* t = f16_table();
  return dot_generic([w, t](int64_t i) { return t[load_u16(w, i)]; }, x, n);
}
float dot_bf16(const void* w, const float* x, int64_t n) {
  return dot_generic([w](int64_t i) { return bf16_to_f32(load_u16(w, i)); }, x, n);
}

void f16_to_f32_row(const void* src, float* dst, int64_t n) {
  const float* t = f16_table();
  for (int64_t i = 0; i < n; ++i) dst[i] = t[load_u16(src, i)];
}
void bf16_to_f32_row(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(src, i));
}

void dot_rows(DType t, const std::byte* w, int64_t row_bytes, int64_t m, const float* x, int64_t n,
              int64_t k, float* y, int64_t ldy, float*) {
  const auto dot = t == DType::F32 ? dot_f32 : t == DType::F16 ? dot_f16 : dot_bf16;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) y[j * ldy + i] = dot(w + i * row_bytes, x + j * k, k);
}

void pack_panel(DType t, const std::byte* w, int64_t row_bytes, int64_t m, int64_t k,
                float* panel) {
  const float* h = f16_table();
  for (int64_t i = 0; i < kPanel; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const std::byte* row = w + i * row_bytes;
      panel[j * kPanel + i] = i >= m            ? 0.0f
                              : t == DType::F32 ? load_f32(row, j)
                              : t == DType::F16 ? h[load_u16(row, j)]
                                                : bf16_to_f32(load_u16(row, j));
    }
}

void gemm_panel(const float* panel, int64_t m, const float* x, int64_t ldx, int64_t n, int64_t k,
                float* y, int64_t ldy, bool accumulate) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < m; ++i) {
      float s = accumulate ? y[t * ldy + i] : 0.0f;
      float d = 0.0f;
      for (int64_t j = 0; j < k; ++j) d += panel[j * kPanel + i] * x[t * ldx + j];
      y[t * ldy + i] = s + d;
    }
}

void attn_scores(const float* k, int64_t stride, int64_t n_keys, const float* q, int64_t n,
                 float scale, float* scores) {
  for (int64_t t = 0; t < n_keys; ++t) scores[t] = dot_f32(k + t * stride, q, n) * scale;
}

void attn_wsum(const float* p, const float* v, int64_t stride, int64_t n_keys, int64_t n,
               float* out, bool accumulate) {
  if (!accumulate)
    for (int64_t i = 0; i < n; ++i) out[i] = 0.0f;
  for (int64_t t = 0; t < n_keys; ++t) {
    const float pt = p[t];
    const float* vt = v + t * stride;
    for (int64_t i = 0; i < n; ++i) out[i] += pt * vt[i];
  }
}

}  // namespace

const Kernels& scalar_kernels() {
  static const Kernels k{dot_f32,  dot_f16,    dot_bf16,   f16_to_f32_row, bf16_to_f32_row,
                         dot_rows, pack_panel, gemm_panel, attn_scores,    attn_wsum};
  return k;
}

}  // namespace epwa::ops
