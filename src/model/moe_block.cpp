// The router and the sparse MoE block: routed experts (Backend::expert_ffn) plus an optional
// shared expert. For Mixtral these are exactly the operations of the original single-function
// forward pass (bit-identical outputs).
#include <algorithm>
#include <cmath>

#include "blocks.hpp"
#include "core/phase_stats.hpp"
#include "epwa/ops.hpp"

namespace epwa::block {

namespace {

// Top-k of `logits` by value, ties to the lower index, best first: insertion into the k kept so
// far, scanning in index order (a later index never passes an equal value).
void select_topk(std::span<const float> logits, int32_t k, int32_t* out) {
  int32_t kept = 0;
  for (int32_t e = 0; e < static_cast<int32_t>(logits.size()); ++e) {
    const float v = logits[e];
    if (kept == k && !(v > logits[out[k - 1]])) continue;
    int32_t p = kept < k ? kept++ : k - 1;
    for (; p > 0 && v > logits[out[p - 1]]; --p) out[p] = out[p - 1];
    out[p] = e;
  }
}

// o += sigmoid(w . xn) * shared_expert(xn) (or without the gate), row by row.
void add_shared_expert(const Backend& be, const ModelConfig& c, const LayerWeights& L,
                       const float* xn, int64_t n, float* o, Context::Scratch& s) {
  const int64_t d = c.hidden_size;
  float* shared = s.shared.resize(n * d);
  be.ffn(L.shared.gate, L.shared.down, L.shared.up, c.shared_expert_intermediate_size, xn, n, d,
         shared, *s.backend);
  for (int64_t i = 0; i < n; ++i) {
    float g = 1;
    if (c.shared_expert_gate) {
      const float z = dot(L.shared_gate_inp.dtype, L.shared_gate_inp.data.data(), xn + i * d, d);
      g = 1 / (1 + std::exp(-z));
    }
    for (int64_t t = 0; t < d; ++t) o[i * d + t] += g * shared[i * d + t];
  }
}

}  // namespace

void route(const Backend& be, const ModelConfig& c, const LayerWeights& L, const float* xn,
           int64_t n, Context::Scratch& s) {
  const int64_t ne = c.num_experts, k = c.experts_per_token, d = c.hidden_size;
  float* router = s.router.resize(n * ne);
  float* probs = s.probs.resize(ne);
  int32_t* topk = s.topk.resize(n * k);
  float* topw = s.topw.resize(n * k);
  {
    EPWA_PHASE("router");
    const TensorView* ws[] = {&L.router};
    float* ys[] = {router};
    be.linear(ws, xn, n, d, ys, *s.backend);
  }
  EPWA_PHASE("top-k");
  for (int64_t i = 0; i < n; ++i) {
    std::span<const float> logits(router + i * ne, ne);
    int32_t* top = topk + i * k;
    float* w = topw + i * k;
    select_topk(logits, static_cast<int32_t>(k), top);
    const float mx = logits[top[0]];
    float z = 0;
    for (int64_t e = 0; e < ne; ++e) z += (probs[e] = std::exp(logits[e] - mx));
    float wsum = 0;
    for (int64_t j = 0; j < k; ++j) wsum += (w[j] = probs[top[j]] / z);
    if (c.norm_topk_prob)
      for (int64_t j = 0; j < k; ++j) w[j] /= wsum;
  }
}

void moe(const Backend& be, const ModelConfig& c, const LayerWeights& L, const float* xn, int64_t n,
         float* o, Context::Scratch& s) {
  const Routing r{s.topk.data(), s.topw.data(), c.experts_per_token};
  be.expert_ffn({L.w1, L.w2, L.w3}, c.expert_intermediate_size, r, xn, n, c.hidden_size, o,
                *s.backend);
  if (c.shared_expert_intermediate_size > 0) add_shared_expert(be, c, L, xn, n, o, s);
}

}  // namespace epwa::block
