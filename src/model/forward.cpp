// The forward pass: the embedding, then per layer the attention block and either the MoE block
// (router observed here) or the dense FFN, then the output head. Each block matches transformers'
// modeling code of the family operation for operation (docs/ARCHITECTURE.md).
#include <algorithm>

#include "blocks.hpp"
#include "core/phase_stats.hpp"
#include "epwa/error.hpp"
#include "epwa/model.hpp"
#include "table_row.hpp"

namespace epwa {

std::vector<float> Model::forward(std::span<const int32_t> tokens, Context& ctx,
                                  const ForwardOptions& opt) const {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const auto n_moe = static_cast<int32_t>(moe_layers_.size());
  check(&ctx.model() == this, "forward: the context belongs to another model");
  if (n <= 0) throw Error("forward: no tokens");
  if (opt.stop_after_router >= n_moe)
    throw Error("router layer " + std::to_string(opt.stop_after_router) +
                " out of range (model has " + std::to_string(n_moe) + " MoE layers)");
  for (int32_t t : tokens)
    if (t < 0 || t >= c.vocab_size)
      throw Error("token id " + std::to_string(t) + " out of range [0, " +
                  std::to_string(c.vocab_size) + ")");
  const int64_t d = c.hidden_size, qdim = int64_t{c.num_heads} * c.head_dim;
  const int64_t kvdim = int64_t{c.num_kv_heads} * c.head_dim;
  const int64_t p0 = ctx.size();
  ctx.reserve(p0 + n);

  const Backend& be = *backend_;
  Context::Scratch& s = *ctx.scratch_;
  float* x = s.x.resize(n * d);
  float* xn = s.xn.resize(n * d);
  s.q.resize(n * qdim);
  s.k.resize(n * kvdim);
  s.v.resize(n * kvdim);
  s.att.resize(n * qdim);
  float* o = s.o.resize(n * d);
  // Sized for the whole cache: a generation fills it without growing anything.
  be.reserve(*s.backend, std::max(p0 + n, ctx.capacity()));
  auto watched = [&](int32_t m) {
    return opt.watch.empty() || std::find(opt.watch.begin(), opt.watch.end(), m) != opt.watch.end();
  };

  for (int64_t i = 0; i < n; ++i) table_row(weights_.embed, tokens[i], x + i * d);

  for (int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    block::attention(be, c, L, {ctx.k_[l].data(), ctx.v_[l].data(), ctx.capacity()}, p0, n, x, s);
    {
      EPWA_PHASE("norm");
      be.rmsnorm(x, n, d, L.ffn_norm, c.rms_norm_eps, xn);
    }
    const int32_t m = moe_index_[l];
    if (m < 0) {
      be.ffn(L.dense, c.intermediate_size, xn, n, d, o, *s.backend);
    } else {
      block::route(be, c, L, xn, n, s);
      if (opt.observer && watched(m)) {
        const int64_t ne = c.num_experts, k = c.experts_per_token;
        for (int64_t i = 0; i < n; ++i)
          opt.observer->observe({m,
                                 p0 + i,
                                 {s.router.data() + i * ne, static_cast<size_t>(ne)},
                                 {s.topk.data() + i * k, static_cast<size_t>(k)},
                                 {s.topw.data() + i * k, static_cast<size_t>(k)}});
      }
      if (m == opt.stop_after_router) return {};
      block::moe(be, c, L, xn, n, o, s);
    }
    for (int64_t i = 0; i < n * d; ++i) x[i] += o[i];
  }
  ctx.size_ = p0 + n;

  EPWA_PHASE("head");
  const int64_t first = opt.all_logits ? 0 : n - 1;
  const int64_t rows_out = n - first;
  be.rmsnorm(x + first * d, rows_out, d, weights_.final_norm, c.rms_norm_eps, xn);
  std::vector<float> logits(rows_out * c.vocab_size);
  const TensorView* head[] = {&weights_.head};
  float* ys[] = {logits.data()};
  be.linear(head, xn, rows_out, d, ys, *s.backend);
  return logits;
}

}  // namespace epwa
