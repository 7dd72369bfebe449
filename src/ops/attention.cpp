// Single-head attention over a KV cache. Scores and the weighted sum run through the kernel table
// (ops::kernels()); a block of queries walks the keys in tiles copied to a contiguous buffer, so
// that each K/V row comes from memory once per block (a head's rows sit kvdim floats apart in the
// cache, which maps them onto a few L1 sets). Tiling changes no float operation: every key's score
// is the same dot, and a query's weighted sum continues over the tiles in key order.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/thread_scratch.hpp"
#include "kernels.hpp"

namespace epwa {
namespace {

// transformers multiplies q.k by head_dim ** -0.5 (a Python double rounded to f32).
float score_scale(int64_t hd) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
}

void check_layout(int64_t hd, int64_t stride) {
  if (hd <= 0) throw Error("attention: head_dim " + std::to_string(hd) + " is not positive");
  if (stride < hd)
    throw Error("attention: KV stride " + std::to_string(stride) + " < head_dim " +
                std::to_string(hd));
}

// One query's arguments; returns head_dim. Messages are built only on failure: this runs once per
// head and token.
int64_t check_head_args(std::span<const float> q, int64_t n_keys, int64_t stride,
                        std::span<const float> scores, std::span<const float> out) {
  const int64_t hd = static_cast<int64_t>(q.size());
  if (hd <= 0 || static_cast<int64_t>(out.size()) != hd)
    throw Error("attention: q has " + std::to_string(q.size()) + " values, out " +
                std::to_string(out.size()));
  if (n_keys <= 0) throw Error("attention: no key to attend to");
  check_layout(hd, stride);
  if (static_cast<int64_t>(scores.size()) < n_keys)
    throw Error("attention: scratch of " + std::to_string(scores.size()) + " floats for " +
                std::to_string(n_keys) + " keys");
  return hd;
}

// One query, keys read in place: the decode path.
void attend_one(const ops::Kernels& kern, const float* q, const float* k, const float* v,
                int64_t n_keys, int64_t stride, int64_t hd, float* scores, float* out) {
  kern.attn_scores(k, stride, n_keys, q, hd, score_scale(hd), scores);
  softmax(std::span<float>(scores, static_cast<size_t>(n_keys)));
  kern.attn_wsum(scores, v, stride, n_keys, hd, out, false);
}

// Keys per tile: 8 KB of K (or V) stays in L1 while every query of the block uses it.
int64_t tile_keys(int64_t hd) {
  return std::max<int64_t>(8, 2048 / hd);
}

// Copies rows [t0, t1) of one head (hd floats each, stride apart) to a dense tile.
void pack_rows(const float* src, int64_t stride, int64_t t0, int64_t t1, int64_t hd, float* tile) {
  for (int64_t t = t0; t < t1; ++t) std::copy_n(src + t * stride, hd, tile + (t - t0) * hd);
}

}  // namespace

void attention_head(std::span<const float> q, const float* k, const float* v, int64_t n_keys,
                    int64_t stride, std::span<float> scores, std::span<float> out) {
  const int64_t hd = check_head_args(q, n_keys, stride, scores, out);
  attend_one(ops::kernels(), q.data(), k, v, n_keys, stride, hd, scores.data(), out.data());
}

void attention_head_sink(std::span<const float> q, const float* k, const float* v, int64_t n_keys,
                         int64_t stride, float sink, std::span<float> scores,
                         std::span<float> out) {
  const int64_t hd = check_head_args(q, n_keys, stride, scores, out);
  const ops::Kernels& kern = ops::kernels();
  float* s = scores.data();
  kern.attn_scores(k, stride, n_keys, q.data(), hd, score_scale(hd), s);
  float mx = sink;
  for (int64_t t = 0; t < n_keys; ++t) mx = s[t] > mx ? s[t] : mx;
  double sum = std::exp(sink - mx);
  for (int64_t t = 0; t < n_keys; ++t) sum += (s[t] = std::exp(s[t] - mx));
  const auto z = static_cast<float>(sum);
  for (int64_t t = 0; t < n_keys; ++t) s[t] /= z;
  kern.attn_wsum(s, v, stride, n_keys, hd, out.data(), false);
}

void attention_block(std::span<const AttentionQuery> queries, int64_t head_dim, const float* k,
                     const float* v, int64_t stride, std::span<float> scores) {
  const int64_t hd = head_dim;
  check_layout(hd, stride);
  int64_t total = 0, n_max = 0;
  for (const AttentionQuery& a : queries) {
    if (a.n_keys <= 0) throw Error("attention: no key to attend to");
    if (a.q == nullptr || a.out == nullptr) throw Error("attention: a query without q or out");
    total += a.n_keys;
    n_max = std::max(n_max, a.n_keys);
  }
  if (static_cast<int64_t>(scores.size()) < total)
    throw Error("attention: scratch of " + std::to_string(scores.size()) + " floats for " +
                std::to_string(total) + " scores");
  const ops::Kernels& kern = ops::kernels();
  if (queries.size() == 1)
    return attend_one(kern, queries[0].q, k, v, queries[0].n_keys, stride, hd, scores.data(),
                      queries[0].out);

  // Query j's scores at scores[off_j, off_j + n_keys_j): first all scores, tile by tile of K.
  const float scale = score_scale(hd);
  const int64_t tk = tile_keys(hd);
  thread_local ThreadScratch<std::vector<float>> tile_tls;
  std::vector<float>& tile = *tile_tls;
  tile.resize(static_cast<size_t>(tk * hd));
  for (int64_t t0 = 0; t0 < n_max; t0 += tk) {
    const int64_t t1 = std::min(n_max, t0 + tk);
    pack_rows(k, stride, t0, t1, hd, tile.data());
    float* s = scores.data();
    for (const AttentionQuery& a : queries) {
      if (a.n_keys > t0)
        kern.attn_scores(tile.data(), hd, std::min(t1, a.n_keys) - t0, a.q, hd, scale, s + t0);
      s += a.n_keys;
    }
  }
  float* s = scores.data();
  for (const AttentionQuery& a : queries) {
    softmax(std::span<float>(s, static_cast<size_t>(a.n_keys)));
    s += a.n_keys;
  }
  // Then every weighted sum, tile by tile of V, each continuing its sum in key order.
  for (int64_t t0 = 0; t0 < n_max; t0 += tk) {
    const int64_t t1 = std::min(n_max, t0 + tk);
    pack_rows(v, stride, t0, t1, hd, tile.data());
    s = scores.data();
    for (const AttentionQuery& a : queries) {
      if (a.n_keys > t0)
        kern.attn_wsum(s + t0, tile.data(), hd, std::min(t1, a.n_keys) - t0, hd, a.out, t0 > 0);
      s += a.n_keys;
    }
  }
}

}  // namespace epwa
