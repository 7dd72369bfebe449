// CPU kernels of the f32/f16/bf16 engine: matrix products over stored weight matrices, row
// conversion, normalisation, rotary embedding, softmax, activations and single-head attention.
// Activations and results are f32; weights are TensorViews of type F32, F16 or BF16 (any
// alignment). The SIMD paths (AVX2+FMA+F16C) are picked at run time; a scalar path runs everywhere.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "epwa/config.hpp"
#include "epwa/tensor.hpp"
#include "epwa/thread_pool.hpp"

namespace epwa {

// ---- views (no copies) ----------------------------------------------------------------------

// Expert e of a merged {E, rows, cols} (or {E, cols}: biases) tensor as a {rows, cols} ({cols})
// view named "<name>[e]".
TensorView expert_view(const TensorView& w, int64_t e);
// Rows [r0, r1) of a 2-D {rows, cols} tensor as a {r1 - r0, cols} view.
TensorView row_range(const TensorView& w, int64_t r0, int64_t r1);

// ---- matrix products ------------------------------------------------------------------------

// y = W x for W {rows, cols}: x.size() == cols, y.size() == rows. Rows are split across the pool.
void matvec(const TensorView& w, std::span<const float> x, std::span<float> y,
            ThreadPool& pool = ThreadPool::global());
// y = W[r0:r1] x: only rows [r0, r1) of W, y.size() == r1 - r0.
void matvec(const TensorView& w, int64_t r0, int64_t r1, std::span<const float> x,
            std::span<float> y, ThreadPool& pool = ThreadPool::global());
// Y = X W^T for n tokens: x is n x cols, y is n x rows, both row-major and dense. Each weight row
// is read once per block of tokens (prompt processing); n == 1 is matvec.
void matmul(const TensorView& w, const float* x, int64_t n, float* y,
            ThreadPool& pool = ThreadPool::global());

// ---- rows -----------------------------------------------------------------------------------

// Converts n stored values of type t (F32/F16/BF16) to f32.
void to_f32(DType t, const std::byte* src, float* dst, int64_t n);
// Row `row` of a 2-D table (an embedding) as f32; out.size() == cols. Throws Error on a row out of
// range.
void embedding_row(const TensorView& table, int64_t row, std::span<float> out);
// Dot product of n stored values of type t (F32/F16/BF16) with f32 x.
float dot(DType t, const std::byte* w, const float* x, int64_t n);

// ---- elementwise ----------------------------------------------------------------------------

// out = x / sqrt(mean(x^2) + eps) * weight (transformers' MixtralRMSNorm, in f32). out may alias x.
void rmsnorm(std::span<const float> x, std::span<const float> weight, float eps,
             std::span<float> out);
// The same with the weight as stored (F32/F16/BF16, {n} or {1, n}).
void rmsnorm(std::span<const float> x, const TensorView& weight, float eps, std::span<float> out);
// x = softmax(x), max-subtracted. An empty span is left alone.
void softmax(std::span<float> x);
// x = x * sigmoid(x).
void silu(std::span<float> x);
// gate = silu(gate) * up (the SwiGLU of an expert).
void swiglu(std::span<float> gate, std::span<const float> up);
// y += a * x.
void axpy(float a, std::span<const float> x, std::span<float> y);

// ---- rotary position embedding ------------------------------------------------------------------

// transformers' "rotate_half" RoPE: dimension i pairs with i + head_dim/2, angle p * inv_freq[i],
// inv_freq[i] = theta^(-2i/head_dim). cos/sin are computed in f32 as transformers does
// (float(p) * inv_freq in f32, then cos/sin of that f32 angle) and cached per position.
class RopeTable {
 public:
  // Precomputes `positions` positions; more are added by ensure() (apply() on an uncached position
  // computes it on the fly, so it is never wrong, only slower).
  RopeTable(int64_t head_dim, float theta, int64_t positions = 0);
  // With YaRN scaling when yarn.on(): yarn_inv_freq's frequencies, cos and sin multiplied by
  // yarn.cos_sin_factor().
  RopeTable(int64_t head_dim, float theta, const Yarn& yarn, int64_t positions = 0);
  void ensure(int64_t positions);  // not thread-safe; call before sharing across threads
  int64_t head_dim() const { return hd_; }
  int64_t cached_positions() const { return static_cast<int64_t>(cos_.size()) / (hd_ / 2); }
  // The cached values, [position][head_dim / 2] (a GPU backend uploads them).
  std::span<const float> cos_table() const { return cos_; }
  std::span<const float> sin_table() const { return sin_; }

  // Rotates one head vector of head_dim floats in place.
  void apply(std::span<float> head, int64_t pos) const;
  void apply(float* head, int64_t pos) const { apply(std::span<float>(head, hd_), pos); }
  // Rotates one head vector in place by interleaved pairs (x[2i], x[2i+1]), as DeepSeek-V2/V3's
  // rotary (complex multiplication; llama.cpp's NORM rope).
  void apply_pairs(float* head, int64_t pos) const;
  // Rotates n_heads consecutive head vectors (a Q or K row of one position).
  void apply_heads(std::span<float> heads, int64_t pos) const;

 private:
  int64_t hd_;
  float scale_ = 1;
  std::vector<float> inv_freq_, cos_, sin_;  // cos_/sin_: [position][head_dim / 2]
};

// YaRN's frequencies for `dim` rotated values (transformers' _compute_yarn_parameters):
// interpolation by yarn.factor below the beta_slow..beta_fast correction range (floored and ceiled
// when yarn.truncate), none above, a linear ramp between.
std::vector<float> yarn_inv_freq(int64_t dim, float theta, const Yarn& yarn);

// ---- attention ------------------------------------------------------------------------------

// One query head over n_keys cached positions (causal: the caller passes n_keys = position + 1):
// scores_t = q.k_t / sqrt(head_dim), softmax over t, out = sum_t p_t v_t. Key t is at k + t *
// stride, value t at v + t * stride (stride >= head_dim, in floats, so a KV cache row can hold all
// heads). `scores` is scratch of at least n_keys floats; head_dim = q.size() = out.size().
void attention_head(std::span<const float> q, const float* k, const float* v, int64_t n_keys,
                    int64_t stride, std::span<float> scores, std::span<float> out);

// attention_head with a sink: the logit `sink` joins the softmax over the scores, and its share is
// dropped (GPT-OSS's learned per-head sinks).
void attention_head_sink(std::span<const float> q, const float* k, const float* v, int64_t n_keys,
                         int64_t stride, float sink, std::span<float> scores, std::span<float> out);

// One query of an attention_block: head_dim floats at q, attends to keys 0..n_keys-1, writes
// head_dim floats at out.
struct AttentionQuery {
  const float* q;
  float* out;
  int64_t n_keys;
};
// Several queries over the same keys and values (one KV head: the tokens of a prompt block, the
// query heads of a group), keys and values laid out as for attention_head. Every output is
// bit-identical to attention_head on that query alone (prompt and decode agree); the block reads
// each K/V row once per block instead of once per query. `scores` is scratch of at least the sum
// of the queries' n_keys floats.
void attention_block(std::span<const AttentionQuery> queries, int64_t head_dim, const float* k,
                     const float* v, int64_t stride, std::span<float> scores);

// ---- dispatch -------------------------------------------------------------------------------

namespace ops {
enum class Isa : uint8_t { Scalar, Avx2 };
std::string_view isa_name(Isa isa);
Isa best_isa();  // Avx2 when the CPU has AVX2, FMA and F16C
Isa active_isa();
// Forces the kernels of every later call (tests, benchmarks); throws Error when the CPU lacks it.
void set_isa(Isa isa);
std::vector<Isa> available_isas();
}  // namespace ops

}  // namespace epwa
