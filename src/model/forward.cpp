// The forward pass: the embedding, then per layer the attention block and either the MoE block
// (router observed here) or the dense FFN, then the output head. Each block matches transformers'
// modeling code of the family operation for operation (docs/ARCHITECTURE.md).
#include <algorithm>

#include "blocks.hpp"
#include "epwa/error.hpp"
#include "epwa/model.hpp"
#include "phase_stats.hpp"

#ifdef EPWA_PHASE_STATS
#include <cstdio>
#include <map>
#include <mutex>
#endif

namespace epwa {

#ifdef EPWA_PHASE_STATS
namespace {
struct PhaseStats {
  std::map<std::string, std::pair<int64_t, int64_t>> t;  // name -> (ns, calls)
  ~PhaseStats() {
    int64_t all = 0;
    for (const auto& [k, v] : t) all += v.first;
    for (const auto& [k, v] : t)
      std::fprintf(stderr, "phase %-16s %9.1f ms %5.1f%% %8lld calls\n", k.c_str(), v.first / 1e6,
                   100.0 * v.first / std::max<int64_t>(all, 1), static_cast<long long>(v.second));
  }
};
PhaseStats g_phases;
}  // namespace
// Calls from one thread (the caller of forward) only.
detail::PhaseTimer::PhaseTimer(const char* name) : slot(g_phases.t[name]) {}
#endif

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

  Context::Scratch& s = *ctx.scratch_;
  float* x = s.x.resize(n * d);
  float* xn = s.xn.resize(n * d);
  s.q.resize(n * qdim);
  s.k.resize(n * kvdim);
  s.v.resize(n * kvdim);
  s.att.resize(n * qdim);
  float* o = s.o.resize(n * d);
  // Sized for the whole cache: a generation fills it without growing anything.
  s.rope.ensure(std::max(p0 + n, ctx.capacity()));
  auto watched = [&](int32_t m) {
    return opt.watch.empty() || std::find(opt.watch.begin(), opt.watch.end(), m) != opt.watch.end();
  };

  for (int64_t i = 0; i < n; ++i) table_row(weights_.embed, tokens[i], x + i * d);

  for (int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    block::attention(c, L, {ctx.k_[l].data(), ctx.v_[l].data(), ctx.capacity()}, p0, n, x, s);
    {
      EPWA_PHASE("norm");
      rmsnorm_rows(x, n, d, L.ffn_norm, c.rms_norm_eps, xn);
    }
    const int32_t m = moe_index_[l];
    if (m < 0) {
      block::ffn(L.dense, c.intermediate_size, d, xn, n, o, s);
    } else {
      block::route(c, L, xn, n, s);
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
      block::moe(c, L, xn, n, o, s);
    }
    for (int64_t i = 0; i < n * d; ++i) x[i] += o[i];
  }
  ctx.size_ = p0 + n;

  EPWA_PHASE("head");
  const int64_t first = opt.all_logits ? 0 : n - 1;
  const int64_t rows_out = n - first;
  rmsnorm_rows(x + first * d, rows_out, d, weights_.final_norm, c.rms_norm_eps, xn);
  std::vector<float> logits(rows_out * c.vocab_size);
  s.inputs.reset();
  linear_rows_of(weights_.head, xn, rows_out, d, logits.data(), s);
  return logits;
}

}  // namespace epwa
