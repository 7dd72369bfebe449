// The router and the sparse MoE block: routed experts (Backend::expert_ffn) plus an optional
// shared expert. For Mixtral these are exactly the operations of the original single-function
// forward pass (bit-identical outputs).
#include "blocks.hpp"
#include "core/phase_stats.hpp"

namespace epwa::block {

namespace {

// o += sigmoid(w . xn) * shared_expert(xn) (or without the gate), row by row.
void add_shared_expert(const Backend& be, const ModelConfig& c, const LayerWeights& L,
                       const float* xn, int64_t n, float* o, Context::Scratch& s) {
  const int64_t d = c.hidden_size;
  float* shared = s.buf(be, Slot::Shared, n * d);
  be.ffn(L.shared.gate, L.shared.down, L.shared.up, c.shared_expert_intermediate_size, xn, n, d,
         shared, *s.backend);
  if (c.shared_expert_gate)
    be.add_gated(L.shared_gate_inp, xn, shared, n, d, o, *s.backend);
  else
    be.add(o, shared, n * d, *s.backend);
}

}  // namespace

void route(const Backend& be, const ModelConfig& c, const LayerWeights& L, const float* xn,
           int64_t n, Context::Scratch& s) {
  const int64_t ne = c.num_experts, k = c.experts_per_token, d = c.hidden_size;
  float* router = s.buf(be, Slot::Router, n * ne);
  int32_t* topk = s.buf<int32_t>(be, Slot::TopK, n * k);
  float* topw = s.buf(be, Slot::TopW, n * k);
  {
    EPWA_PHASE("router");
    const TensorView* ws[] = {&L.router};
    float* ys[] = {router};
    be.linear(ws, xn, n, d, ys, *s.backend);
    // GPT-OSS's router is a linear layer with a bias (DeepSeek's bias only ranks, in
    // route_grouped).
    if (c.router_bias && c.router_scoring == RouterScoring::TopkSoftmax)
      be.add_bias(L.router_bias, router, n, *s.backend);
  }
  EPWA_PHASE("top-k");
  if (c.plain_routing()) {
    // Softmax over the k best logits equals the softmax over all renormalised over the k.
    const bool renormalize = c.norm_topk_prob || c.router_scoring == RouterScoring::TopkSoftmax;
    return be.route(router, n, ne, k, renormalize, topk, topw, *s.backend);
  }
  const RouteRule rule{k,
                       c.norm_topk_prob,
                       c.router_scoring == RouterScoring::Sigmoid,
                       c.n_group,
                       c.topk_group,
                       c.group_score == GroupScore::TopTwo,
                       c.routed_scaling_factor,
                       c.router_bias ? &L.router_bias : nullptr};
  be.route_grouped(router, n, ne, rule, topk, topw, *s.backend);
}

void download_routing(const Backend& be, const ModelConfig& c, int64_t n, Context::Scratch& s,
                      const Download* also) {
  const int64_t ne = c.num_experts, k = c.experts_per_token;
  const auto bytes = [](int64_t count) { return static_cast<size_t>(count) * 4; };
  const Download parts[] = {
      {s.router.resize(n * ne), s.buf(be, Slot::Router, n * ne), bytes(n * ne)},
      {s.topk.resize(n * k), s.buf<int32_t>(be, Slot::TopK, n * k), bytes(n * k)},
      {s.topw.resize(n * k), s.buf(be, Slot::TopW, n * k), bytes(n * k)},
      also ? *also : Download{}};
  be.download_all(std::span(parts, also ? 4 : 3), *s.backend);
}

void moe(const Backend& be, const ModelConfig& c, const LayerWeights& L, const float* xn, int64_t n,
         float* o, Context::Scratch& s) {
  const int64_t k = c.experts_per_token;
  const Routing r{s.buf<int32_t>(be, Slot::TopK, n * k), s.buf(be, Slot::TopW, n * k), k};
  be.expert_ffn({L.w1, L.w2, L.w3, L.b1, L.b2, L.b3, c.swiglu_limit}, c.expert_intermediate_size, r,
                xn, n, c.hidden_size, o, *s.backend);
  if (c.shared_expert_intermediate_size > 0) add_shared_expert(be, c, L, xn, n, o, s);
}

}  // namespace epwa::block
