// The CUDA backend's kernels, launched on a stream. Pointers are device pointers; weights are
// stored rows (`row_bytes` apart) of any DType, read element by element through weight_at.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "epwa/backend.hpp"
#include "epwa/tensor.hpp"

namespace epwa::cuda {

// Device-only types (never in a file): Q4_0 and Q8_0 rows of a width that is a multiple of 256,
// stored by groups of eight blocks, scales first (grouped.cuh), so that the decode kernels load
// whole blocks with aligned 16-byte loads.
constexpr DType kQ4_0x8 = static_cast<DType>(0xF0);
constexpr DType kQ8_0x8 = static_cast<DType>(0xF1);
// The type a weight of `type` with rows of `cols` values has on the device.
DType grouped_type(DType type, int64_t cols);
// out = the `blocks` blocks of `in` (a file's Q4_0 or Q8_0 rows) in the layout of `grouped`.
void regroup(const uint8_t* in, int64_t blocks, DType grouped, uint8_t* out, cudaStream_t s);

struct DevMatrix {
  const uint8_t* data;
  DType type;
  int64_t rows, cols, row_bytes;
};

// Activation rows rounded to 8 bits per block of 32 as the CPU rounds them for Q8_0 and Q4_0
// weights (d = amax / 127, q = nearest(x / d)): one int8 per value and one f32 scale per block.
struct Q8Rows {
  int8_t* q;
  float* d;
};
// Whether products of `type` weights below the prompt size read Q8Rows (dp4a) when given them.
bool reads_q8(DType type, int64_t cols);
// out = the n rows of x (cols values each, a multiple of 32) rounded to 8 bits.
void quantize_q8(const float* x, int64_t n, int64_t cols, const Q8Rows& out, cudaStream_t s);

// y[i][r] = W[r] . x[i] for n rows of x (cols values each). With xq (x rounded by quantize_q8)
// and reads_q8(w.type), the kernels read xq instead of x.
void linear(const DevMatrix& w, const float* x, int64_t n, float* y, cudaStream_t s,
            const Q8Rows* xq = nullptr);

// The most slots of a decode step's expert tile (the activation rows a warp reads each weight
// value for) and the most tokens of a prompt's (mma_q8_experts on the int8 tensor cores).
constexpr int64_t kTileSlots = 8;
constexpr int64_t kTileTokens = 64;
// The (token, expert) slots of a batch grouped by expert, on the device: `order` holds the slots
// expert by expert, `tiles` up to max_tiles runs of at most kTileSlots of one expert, `wide` up to
// max_wide runs of at most kTileTokens (cut on the device too: a prompt does not wait for the
// counts to run its experts on the tensor cores).
struct ExpertGroups {
  int32_t* order;   // slots entries
  int4* tiles;      // max_tiles entries: {expert, first index into order, count, 0}
  int4* wide;       // max_wide entries, the same
  int32_t* counts;  // experts entries: the slots of each expert
  int64_t max_tiles = 0, max_wide = 0;
};
// Tiles of at most `tile` slots a batch needs at most: enough room for group_experts.
inline int64_t max_expert_tiles(int64_t slots, int64_t experts, int64_t tile) {
  return slots / tile + experts;
}
// Fills g (order, tiles and wide sized for `slots` by max_expert_tiles) from topk.
void group_experts(const int32_t* topk, int64_t slots, int64_t experts, ExpertGroups& g,
                   cudaStream_t s);

// The experts of `slots` (token, expert) pairs: matrix e = topk[slot] of `mats` (one row pointer
// per expert, all of `type`, rows x cols). y[slot][r] = W_e[r] . x[slot / k] when x_per_token,
// else W_e[r] . x[slot]. Types of chunk8.cuh run by the tiles of g; xq as for linear.
void expert_linear(const uint8_t* const* mats, DType type, int64_t rows, int64_t cols,
                   int64_t row_bytes, const int32_t* topk, const ExpertGroups& g, int64_t slots,
                   int64_t k, bool x_per_token, const float* x, float* y, cudaStream_t s,
                   const Q8Rows* xq = nullptr);

// Whether mma_q8 multiplies weights of `type` (grouped Q4_0 / Q8_0, aligned rows) at `data`.
bool mma_q8_fits(DType type, int64_t cols, int64_t row_bytes, const void* data);
// y[i][r] = W[r] . x[i] for the n rows of x rounded by quantize_q8, on the int8 tensor cores
// (mma_q8.cu): per block d_w * d_x * (q_w . q_x), summed in f32, as the 8-bit decode kernels.
void mma_q8(const DevMatrix& w, const Q8Rows& x, int64_t n, float* y, cudaStream_t s);
// The same for routed experts in one launch: for each of the `count` tiles {expert, first row,
// rows (at most tile_tokens: kTileSlots or kTileTokens, as group_experts cuts them), 0}, y[i][r] =
// W_expert[r] . x[i] over its rows i (mats: one row pointer per expert, all of `type`, rows x
// cols). Tiles of no rows are skipped.
void mma_q8_experts(const uint8_t* const* mats, DType type, int64_t rows, int64_t cols,
                    int64_t row_bytes, const int4* tiles, int64_t count, int64_t tile_tokens,
                    const Q8Rows& x, float* y, cudaStream_t s);

// out = rows [r0, r0 + count) of w as f32 or f16 (count x cols values).
void dequantize_rows(const DevMatrix& w, int64_t r0, int64_t count, float* out, cudaStream_t s);
void dequantize_rows(const DevMatrix& w, int64_t r0, int64_t count, __half* out, cudaStream_t s);

// out[i] = x[i] * scale[i] in f16 for n rows of cols values, scale[i] the power of two that brings
// the row's largest magnitude into [2^13, 2^14) (f16 tops out at 65504).
void to_half_rows(const float* x, int64_t n, int64_t cols, __half* out, float* scale,
                  cudaStream_t s);
// y[i] /= scale[i] for n rows of `rows` values: undoes to_half_rows' scale on a product's rows.
void unscale_rows(float* y, int64_t n, int64_t rows, const float* scale, cudaStream_t s);

// dst[i] = src row (idx[i] / div) (cols values) for i < count: a batch's rows in expert order.
void gather_rows(const float* src, const int32_t* idx, int64_t count, int64_t div, int64_t cols,
                 float* dst, cudaStream_t s);
// dst row idx[i] = src[i] (cols values) for i < count: back to slot order.
void scatter_rows(const float* src, const int32_t* idx, int64_t count, int64_t cols, float* dst,
                  cudaStream_t s);

// x[i] = row tokens[i] of `table` (d values each, stored as rows of `type`).
void embed(const uint8_t* table, DType type, int64_t row_bytes, const int32_t* tokens, int64_t n,
           int64_t d, float* x, cudaStream_t s);

// x += y.
void add(float* x, const float* y, int64_t count, cudaStream_t s);

// y[i] += b for n rows of m values (b: one stored row).
void add_bias(const uint8_t* b, DType type, int64_t m, float* y, int64_t n, cudaStream_t s);

// y = clamp(y, -limit, limit).
void clamp(float* y, int64_t count, float limit, cudaStream_t s);

// The k best of `experts` logits per row (best first, ties to the lower index; k <= kMaxTopK) and
// their softmax weights, renormalised over the k when `renormalize`.
constexpr int64_t kMaxTopK = 16;
void route(const float* logits, int64_t n, int64_t experts, int64_t k, bool renormalize,
           int32_t* topk, float* topw, cudaStream_t s);

// DeepSeek's routers (Backend::route_grouped; grouped_route.hpp, the CPU's code), one thread a
// row; bias: the correction bias's f32 device copy, or nullptr. At most kMaxGroupedExperts experts
// in at most kMaxGroups groups.
constexpr int64_t kMaxGroupedExperts = 256, kMaxGroups = 64;
void route_grouped(const float* logits, int64_t n, int64_t experts, const RouteRule& r,
                   const float* bias, int32_t* topk, float* topw, cudaStream_t s);

// A sequence's cache of one layer (rows of kv_dim keys and values), for attention_rows
// (a latent cache: k only).
struct CacheRows {
  float* k;
  float* v;
};

// The entries of a latent attention launch: rows 0... of one sequence at positions p0... of
// `cache`, or (with `at`) row at[i].x of the batch at position at[i].y of caches[i].k (one row of
// each of several sequences).
struct LatentRows {
  float* cache = nullptr;
  int64_t p0 = 0;
  const int2* at = nullptr;
  const CacheRows* caches = nullptr;
};

// Multi-head latent attention (Backend::latent_attention), around the backend's two GEMMs
// (q_lat = W_uk^T q_nope per head; att = W_uv o_lat per head). latent_append: entry i's row of kv
// (latent + rope values) into its cache at its position, the rope part rotated by interleaved
// pairs (cos / sin: the latent RoPE table, [position][rope / 2]). latent_query_rope: the rope
// part of each entry's query, rotated at its position and scaled, after the latent part in its
// row of qlat (rows of heads x (latent + rope)). latent_attend, after every entry is appended: per
// (entry, head), scores of its qlat row against the cached rows of positions [0, the entry's],
// softmax, the weighted sum of the cached latents into its row of olat (rows of heads x latent).
// `scores` holds n x heads x score_stride floats (score_stride > every position).
void latent_append(const float* kv, int64_t n, const LatentRows& rows, const LatentShape& sh,
                   const float* cos, const float* sin, cudaStream_t s);
void latent_query_rope(const float* q, int64_t n, const LatentRows& rows, const LatentShape& sh,
                       const float* cos, const float* sin, float* qlat, cudaStream_t s);
void latent_attend(const float* qlat, int64_t n, const LatentRows& rows, const LatentShape& sh,
                   float* scores, int64_t score_stride, float* olat, cudaStream_t s);
// A prompt's attention between its two GEMMs (latent or grouped-query): n rows of heads rows of
// scores (row i at position p0 + i), each a softmax over keys [0, p0 + i], its later keys (up to
// `keys`) zeroed.
void causal_softmax(float* scores, int64_t n, int64_t heads, int64_t p0, int64_t keys,
                    int64_t score_stride, cudaStream_t s);
// 1 / sqrt(head_dim), as the CPU rounds it.
float attention_scale(int64_t head_dim);

// o[i] += sigmoid(gate . x[i]) * y[i] for n rows of d values.
void add_gated(const uint8_t* gate, DType type, const float* x, const float* y, int64_t n,
               int64_t d, float* o, cudaStream_t s);

// g[i] = silu(g[i]) * u[i].
void swiglu(float* g, const float* u, int64_t count, cudaStream_t s);

// GPT-OSS's expert activation (Backend's ExpertMatrices) over `rows` rows of width values: row i
// belongs to expert experts[i] (null: to `fixed`); gate_bias / up_bias: a device table of one f32
// row pointer per expert, or null; limit 0: silu(g + bg) * (u + bu). Into g.
void expert_activation(float* g, const float* u, int64_t rows, int64_t width,
                       const int32_t* experts, int32_t fixed, const float* const* gate_bias,
                       const float* const* up_bias, float limit, cudaStream_t s);
// y[i] += bias[expert of row i] for `rows` rows of d values (experts / fixed as above).
void add_expert_bias(float* y, int64_t rows, int64_t d, const int32_t* experts, int32_t fixed,
                     const float* const* bias, cudaStream_t s);

// out[i] = sum over the k slots of row i, in expert-index order, of w[slot] * y[slot] (d values).
void combine_experts(const float* y, const int32_t* topk, const float* w, int64_t n, int64_t k,
                     int64_t d, float* out, cudaStream_t s);

// out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w for n rows of d values (w: one stored row), rows
// `stride` apart in x and out (d when 0).
void rmsnorm(const float* x, int64_t n, int64_t d, const uint8_t* w, DType wtype, float eps,
             float* out, cudaStream_t s, int64_t stride = 0);

// Rotate-half RoPE in place: `heads` heads of head_dim values per row, rows `stride` apart, at
// positions p0...; cos/sin are tables [position][head_dim / 2]. With `at`, entry i rotates row
// at[i].x at position at[i].y instead (rows of several sequences).
void rope(float* x, int64_t n, int64_t heads, int64_t stride, int64_t head_dim, int64_t p0,
          const float* cos, const float* sin, cudaStream_t s, const int2* at = nullptr);

// Causal GQA attention of n queries at positions p0... over a cache whose rows hold kv_heads x
// head_dim keys / values (kc, vc); `scores` holds n x heads x (p0 + n) floats.
void attention(const float* q, const float* kc, const float* vc, int64_t n, int64_t p0,
               int64_t heads, int64_t kv_heads, int64_t head_dim, float* scores, float* att,
               cudaStream_t s);

// attention() with a sink logit per query head (sinks: f32, one per head) joining each softmax's
// denominator, over the last `window` positions when window > 0. Without a window the batch's n
// rows are already in the cache kc / vc; with one, kc / vc is the ring (position p in row p %
// window) of positions before p0 and k / v the batch's rows. Rows go `chunk` at a time, `scores`
// holding chunk x heads x score_stride floats (score_stride >= every query's keys).
void attention_sinks(const float* q, const float* k, const float* v, int64_t n, int64_t p0,
                     int64_t heads, int64_t kv_heads, int64_t head_dim, const float* kc,
                     const float* vc, int64_t window, const float* sinks, float* scores,
                     int64_t score_stride, int64_t chunk, float* att, cudaStream_t s);
// The batch's rows of its last `window` positions (of p0 ... p0 + n - 1) into the ring kc / vc.
void ring_store(const float* k, const float* v, int64_t n, int64_t p0, int64_t window,
                int64_t kv_dim, float* kc, float* vc, cudaStream_t s);

// For each of the n entries (one row of a batch each, of different sequences): appends row at[i].x
// of k and v at position at[i].y of cache i, then attention() of that row's query over positions
// [0, at[i].y]. `scores` holds n x heads x score_stride floats (score_stride > every position).
void attention_rows(const float* q, const float* k, const float* v, const int2* at,
                    const CacheRows* caches, int64_t n, int64_t heads, int64_t kv_heads,
                    int64_t head_dim, float* scores, int64_t score_stride, float* att,
                    cudaStream_t s);

}  // namespace epwa::cuda
