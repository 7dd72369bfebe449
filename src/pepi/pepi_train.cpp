// PEPI on the model side: the router hash, the local model as a distribution source, and the
// teacher-forced passes that label training positions with the router's top-1 expert.
#include <algorithm>
#include <cmath>

#include "epwa/error.hpp"
#include "epwa/model.hpp"
#include "epwa/pepi.hpp"
#include "epwa/quant.hpp"
#include "epwa/session.hpp"
#include "epwa/watermark.hpp"

namespace epwa {

std::string model_router_hash(const Model& m) {
  return router_hash(m);
}

namespace {
// Keeps the router logits of one layer, one row per position.
struct LayerTap : RouterObserver {
  int32_t layer, experts;
  int64_t base;
  std::vector<float> logits;
  LayerTap(int32_t l, int32_t e, int64_t n, int64_t b)
      : layer(l), experts(e), base(b), logits(static_cast<size_t>(n * e), NAN) {}
  void observe(const RouterObservation& o) override {
    if (o.layer != layer) return;
    const int64_t p = o.position - base;
    if (p < 0 || (p + 1) * experts > static_cast<int64_t>(logits.size())) return;
    std::copy(o.logits.begin(), o.logits.end(), logits.begin() + p * experts);
  }
};

std::vector<float> all_logits(Model& m, std::span<const int32_t> tokens, RouterObserver* obs) {
  Context cache = m.make_context(static_cast<int64_t>(tokens.size()));
  ForwardOptions fo;
  fo.observer = obs;
  fo.all_logits = true;
  return m.forward(tokens, cache, fo);
}
}  // namespace

LocalDistributionSource::LocalDistributionSource(Model& model, int32_t top_k)
    : model_(&model), k_(top_k) {}

std::vector<TokenDistribution> LocalDistributionSource::distributions(
    std::span<const int32_t> tokens) {
  if (tokens.empty()) return {};
  const size_t V = static_cast<size_t>(model_->config().vocab_size);
  const std::vector<float> logits = all_logits(*model_, tokens, nullptr);
  std::vector<TokenDistribution> out;
  out.reserve(tokens.size());
  for (size_t p = 0; p < tokens.size(); ++p)
    out.push_back(top_logprobs(std::span(logits).subspan(p * V, V), k_));
  return out;
}

PepiDataset collect_pepi_data(Model& model, std::span<const std::vector<int32_t>> sequences,
                              const CollectOptions& opt) {
  const ModelConfig& c = model.config();
  const int32_t layer = resolve_router_layer(opt.router_layer, c.num_moe_layers());
  const PepiFeaturizer feat(
      opt.features, c.vocab_size,
      opt.features.embed ? pepi_token_table(model, layer) : std::vector<float>{});
  const size_t V = static_cast<size_t>(c.vocab_size);
  PepiDataset data;
  int64_t done = 0, total = 0;
  for (const auto& s : sequences) total += static_cast<int64_t>(s.size());
  for (size_t si = 0; si < sequences.size(); ++si) {
    const auto& seq = sequences[si];
    if (seq.empty()) continue;
    LayerTap tap(layer, c.num_experts, static_cast<int64_t>(seq.size()), 0);
    const std::vector<float> logits = all_logits(model, seq, &tap);
    for (size_t p = 0; p < seq.size(); ++p) {
      const auto row = std::span<const float>(tap.logits).subspan(p * c.num_experts, c.num_experts);
      const ExpertChoice ec = top1_expert(row, model.pathway(layer));
      const TokenDistribution d =
          top_logprobs(std::span(logits).subspan(p * V, V), opt.features.full ? 0 : opt.features.k);
      feat.add_row(d, std::span(seq).first(p + 1), data);
      data.expert.push_back(ec.expert);
      data.confidence.push_back(ec.confidence);
    }
    done += static_cast<int64_t>(seq.size());
    if (opt.progress && (si + 1 == sequences.size() || (si + 1) % 20 == 0))
      opt.progress("collected " + std::to_string(done) + "/" + std::to_string(total) +
                   " positions (" + std::to_string(si + 1) + "/" +
                   std::to_string(sequences.size()) + " sequences)");
  }
  return data;
}

std::vector<float> pepi_token_table(const Model& model, int32_t layer) {
  const ModelConfig& c = model.config();
  const int32_t L = resolve_router_layer(layer, c.num_moe_layers());
  const ModelWeights& w = model.weights();
  const int64_t D = c.hidden_size, V = c.vocab_size, E = c.num_experts;
  check(w.embed.cols() == D && w.embed.rows() == V && w.head.cols() == D && w.head.rows() == V,
        "PEPI token table: embedding or output head is not " + std::to_string(V) + " x " +
            std::to_string(D));
  const std::vector<float> router = model.router_f32(L);
  std::vector<float> norm(static_cast<size_t>(D));
  const TensorView& ffn_norm = w.layers[static_cast<size_t>(model.moe_layers()[L])].ffn_norm;
  dequantize_row(ffn_norm.dtype, ffn_norm.data.data(), norm.data(), D);
  std::vector<float> table(static_cast<size_t>(V * 2 * E)), row(static_cast<size_t>(D));
  for (int part = 0; part < 2; ++part) {
    const TensorView& m = part == 0 ? w.embed : w.head;
    const size_t row_bytes = m.data.size() / static_cast<size_t>(V);
    for (int64_t t = 0; t < V; ++t) {
      dequantize_row(m.dtype, m.data.data() + static_cast<size_t>(t) * row_bytes, row.data(), D);
      double ss = 0;
      for (float x : row) ss += static_cast<double>(x) * x;
      const float inv =
          static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(D) + 1e-5));  // RMSNorm
      for (int64_t e = 0; e < E; ++e) {
        double acc = 0;
        for (int64_t d = 0; d < D; ++d)
          acc += static_cast<double>(router[static_cast<size_t>(e * D + d)]) *
                 norm[static_cast<size_t>(d)] * row[static_cast<size_t>(d)] * inv;
        table[static_cast<size_t>((t * 2 + part) * E + e)] = static_cast<float>(acc);
      }
    }
  }
  return table;
}

PepiRawData collect_pepi_raw(Model& model, std::span<const std::vector<int32_t>> sequences,
                             const CollectOptions& opt) {
  check(!opt.features.full && opt.features.k > 0,
        "PEPI raw collection keeps top-k distributions only");
  const ModelConfig& c = model.config();
  PepiRawData r;
  r.k = opt.features.k;
  r.num_experts = c.num_experts;
  r.vocab_size = c.vocab_size;
  r.router_layer = resolve_router_layer(opt.router_layer, c.num_moe_layers());
  r.router_hash = router_hash(model);
  r.pathway = model.pathway(r.router_layer);
  const size_t V = static_cast<size_t>(c.vocab_size);
  int64_t total = 0;
  for (const auto& s : sequences) total += static_cast<int64_t>(s.size());
  for (size_t si = 0; si < sequences.size(); ++si) {
    const auto& seq = sequences[si];
    if (seq.empty()) continue;
    LayerTap tap(r.router_layer, c.num_experts, static_cast<int64_t>(seq.size()), 0);
    const std::vector<float> logits = all_logits(model, seq, &tap);
    for (size_t p = 0; p < seq.size(); ++p) {
      const TokenDistribution d = top_logprobs(std::span(logits).subspan(p * V, V), r.k);
      r.top_tokens.insert(r.top_tokens.end(), d.tokens.begin(), d.tokens.end());
      r.top_logprobs.insert(r.top_logprobs.end(), d.logprobs.begin(), d.logprobs.end());
    }
    r.router_logits.insert(r.router_logits.end(), tap.logits.begin(), tap.logits.end());
    r.tokens.insert(r.tokens.end(), seq.begin(), seq.end());
    r.seq_offsets.push_back(static_cast<int64_t>(r.tokens.size()));
    if (opt.progress && (si + 1 == sequences.size() || (si + 1) % 50 == 0))
      opt.progress("collected " + std::to_string(r.tokens.size()) + "/" + std::to_string(total) +
                   " positions (" + std::to_string(si + 1) + "/" +
                   std::to_string(sequences.size()) + " sequences)");
  }
  return r;
}

}  // namespace epwa
