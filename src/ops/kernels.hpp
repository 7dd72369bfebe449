// The per-ISA kernel table behind the public ops: one scalar table that runs anywhere and one AVX2
// table (kernels_avx2.cpp, compiled for AVX2+FMA+F16C) chosen at run time from cpu_features().
#pragma once
#include <cstdint>

#include "epwa/ops.hpp"

namespace epwa::ops {

struct Kernels {
  // Dot product of n stored weights (any alignment) with f32 x.
  float (*dot_f32)(const void* w, const float* x, int64_t n);
  float (*dot_f16)(const void* w, const float* x, int64_t n);
  float (*dot_bf16)(const void* w, const float* x, int64_t n);
  // Converts n stored values to f32.
  void (*f16_to_f32)(const void* src, float* dst, int64_t n);
  void (*bf16_to_f32)(const void* src, float* dst, int64_t n);
  // matmul for a few tokens: y[t * ldy + i] = the table's dot product of stored row i (at w + i *
  // row_bytes, type t: F32/F16/BF16) with x + t * k, for i < m, t < n, each bit for bit the value
  // matvec gives that row and token. Each row is converted once (into scratch, k floats) for all
  // n tokens.
  void (*dot_rows)(DType t, const std::byte* w, int64_t row_bytes, int64_t m, const float* x,
                   int64_t n, int64_t k, float* y, int64_t ldy, float* scratch);
  // matmul's panel: k columns of m <= kPanel stored rows (row i at w + i * row_bytes, element
  // type t: F32/F16/BF16) converted to f32 and transposed, panel[j * kPanel + i] = W[i][j]; rows
  // m..kPanel-1 are zeros.
  void (*pack_panel)(DType t, const std::byte* w, int64_t row_bytes, int64_t m, int64_t k,
                     float* panel);
  // Y[t * ldy + i] (+)= sum_j panel[j * kPanel + i] * X[t * ldx + j] for i < m, t < n, j < k,
  // each sum in order of j. Overwrites Y unless accumulate.
  void (*gemm_panel)(const float* panel, int64_t m, const float* x, int64_t ldx, int64_t n,
                     int64_t k, float* y, int64_t ldy, bool accumulate);
  // Attention scores: scores[t] = dot_f32(k + t * stride, q, n) * scale for t < n_keys. Each key
  // gets exactly the float operations of dot_f32, however many keys one call gets.
  void (*attn_scores)(const float* k, int64_t stride, int64_t n_keys, const float* q, int64_t n,
                      float scale, float* scores);
  // Attention weighted sum: out[i] (+)= p[t] * v[t * stride + i] for i < n, added in order of t =
  // 0..n_keys-1, each product rounded before its add (no FMA). Starts from zeros unless
  // accumulate, so a sum split over consecutive calls equals the one-call sum bit for bit.
  void (*attn_wsum)(const float* p, const float* v, int64_t stride, int64_t n_keys, int64_t n,
                    float* out, bool accumulate);
};
// Rows per matmul panel: two 8-lane registers per token in the AVX2 micro-kernel.
inline constexpr int64_t kPanel = 16;

const Kernels& scalar_kernels();
// nullptr when the build has no AVX2 code (non-x86); callers still check cpu_features().
const Kernels* avx2_kernels();
// The table for an ISA; throws Error when this CPU cannot run it.
const Kernels& kernels_for(Isa isa);
// The table of active_isa().
const Kernels& kernels();

}  // namespace epwa::ops
