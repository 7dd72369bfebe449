// The Mixtral forward pass, written to match transformers' MixtralForCausalLM operation for operation:
// RMSNorm in f32, rotate-half RoPE, grouped-query attention, and the sparse MoE block (softmax over all
// experts, top-k with ties to the lower index, renormalised weights, SwiGLU experts).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "epwa/error.hpp"
#include "epwa/model.hpp"
#include "epwa/ops.hpp"
#include "linear.hpp"

namespace epwa {

struct Model::Scratch {
  RopeTable rope;
  std::vector<float> x, xn, q, k, v, att, o, router, probs, gathered, gate, up, down, scores;
  std::vector<int32_t> topk;
  std::vector<float> topw;
  explicit Scratch(const ModelConfig& c) : rope(c.head_dim, c.rope_theta) {}
};

Model::Model(ModelConfig config, ModelWeights weights, std::shared_ptr<const void> keep_alive,
             std::filesystem::path source, std::string format)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      keep_alive_(std::move(keep_alive)),
      source_(std::move(source)),
      format_(std::move(format)),
      scratch_(std::make_unique<Scratch>(config_)) {}

Model::~Model() = default;

std::vector<float> Model::router_f32(int32_t layer) const {
  check(layer >= 0 && layer < config_.num_layers, "router layer " + std::to_string(layer) +
                                                      " out of range (model has " +
                                                      std::to_string(config_.num_layers) + " layers)");
  const TensorView& r = weights_.layers[layer].router;
  std::vector<float> out(r.numel());
  for (int64_t e = 0; e < r.rows(); ++e) table_row(r, e, out.data() + e * r.cols());
  return out;
}

namespace {

void rmsnorm_rows(const float* x, int64_t n, int64_t d, const TensorView& w, float eps, float* out) {
  for (int64_t i = 0; i < n; ++i)
    rmsnorm({x + i * d, static_cast<size_t>(d)}, w, eps, {out + i * d, static_cast<size_t>(d)});
}

// Top-k of `logits` by value, ties to the lower index, best first.
void select_topk(std::span<const float> logits, int32_t k, int32_t* out) {
  std::vector<int32_t> idx(logits.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  std::copy_n(idx.begin(), k, out);
}

}  // namespace

std::vector<float> Model::forward(std::span<const int32_t> tokens, KvCache& cache,
                                  const ForwardOptions& opt) {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  check(n > 0, "forward: no tokens");
  check(opt.stop_after_router < c.num_layers,
        "router layer " + std::to_string(opt.stop_after_router) + " out of range (model has " +
            std::to_string(c.num_layers) + " layers)");
  for (int32_t t : tokens)
    check(t >= 0 && t < c.vocab_size, "token id " + std::to_string(t) + " out of range [0, " +
                                          std::to_string(c.vocab_size) + ")");
  const int64_t d = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qdim = nh * hd, kvdim = nkv * hd, ne = c.num_experts, k = c.experts_per_token;
  const int64_t p0 = cache.size();
  cache.reserve(p0 + n);

  Scratch& s = *scratch_;
  s.x.resize(n * d);
  s.xn.resize(n * d);
  s.q.resize(n * qdim);
  s.k.resize(n * kvdim);
  s.v.resize(n * kvdim);
  s.att.resize(n * qdim);
  s.o.resize(n * d);
  s.router.resize(n * ne);
  s.probs.resize(ne);
  s.topk.resize(n * k);
  s.topw.resize(n * k);
  s.rope.ensure(p0 + n);

  for (int64_t i = 0; i < n; ++i) table_row(weights_.embed, tokens[i], s.x.data() + i * d);

  for (int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    // Attention block.
    rmsnorm_rows(s.x.data(), n, d, L.attn_norm, c.rms_norm_eps, s.xn.data());
    linear(L.wq, s.xn.data(), n, s.q.data());
    linear(L.wk, s.xn.data(), n, s.k.data());
    linear(L.wv, s.xn.data(), n, s.v.data());
    float* kc = cache.k_[l].data();
    float* vc = cache.v_[l].data();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = p0 + i;
      for (int64_t h = 0; h < nh; ++h) s.rope.apply(s.q.data() + i * qdim + h * hd, pos);
      for (int64_t h = 0; h < nkv; ++h) s.rope.apply(s.k.data() + i * kvdim + h * hd, pos);
      std::copy_n(s.k.data() + i * kvdim, kvdim, kc + pos * kvdim);
      std::copy_n(s.v.data() + i * kvdim, kvdim, vc + pos * kvdim);
    }
    s.scores.resize(p0 + n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < nh; ++h) {
        const int64_t g = h / (nh / nkv);
        attention_head({s.q.data() + i * qdim + h * hd, static_cast<size_t>(hd)}, kc + g * hd, vc + g * hd,
                       p0 + i + 1, kvdim, s.scores, {s.att.data() + i * qdim + h * hd, static_cast<size_t>(hd)});
      }
    linear(L.wo, s.att.data(), n, s.o.data());
    for (int64_t i = 0; i < n * d; ++i) s.x[i] += s.o[i];

    // Sparse MoE block.
    rmsnorm_rows(s.x.data(), n, d, L.ffn_norm, c.rms_norm_eps, s.xn.data());
    linear(L.router, s.xn.data(), n, s.router.data());
    for (int64_t i = 0; i < n; ++i) {
      std::span<const float> logits(s.router.data() + i * ne, ne);
      int32_t* top = s.topk.data() + i * k;
      float* w = s.topw.data() + i * k;
      select_topk(logits, static_cast<int32_t>(k), top);
      const float mx = logits[top[0]];
      float z = 0;
      for (int64_t e = 0; e < ne; ++e) z += (s.probs[e] = std::exp(logits[e] - mx));
      float wsum = 0;
      for (int64_t j = 0; j < k; ++j) wsum += (w[j] = s.probs[top[j]] / z);
      for (int64_t j = 0; j < k; ++j) w[j] /= wsum;
      if (opt.observer)
        opt.observer->observe({l, p0 + i, logits, {top, static_cast<size_t>(k)}, {w, static_cast<size_t>(k)}});
    }
    if (l == opt.stop_after_router) return {};

    // Group the tokens routed to each expert and run one matrix product per expert.
    std::fill(s.o.begin(), s.o.end(), 0.0f);
    const int64_t inter = c.intermediate_size;
    std::vector<int64_t> rows;
    std::vector<float> rw;
    for (int64_t e = 0; e < ne; ++e) {
      rows.clear();
      rw.clear();
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j)
          if (s.topk[i * k + j] == e) {
            rows.push_back(i);
            rw.push_back(s.topw[i * k + j]);
          }
      if (rows.empty()) continue;
      const int64_t m = static_cast<int64_t>(rows.size());
      s.gathered.resize(m * d);
      s.gate.resize(m * inter);
      s.up.resize(m * inter);
      s.down.resize(m * d);
      for (int64_t r = 0; r < m; ++r) std::copy_n(s.xn.data() + rows[r] * d, d, s.gathered.data() + r * d);
      linear(L.w1[e], s.gathered.data(), m, s.gate.data());
      linear(L.w3[e], s.gathered.data(), m, s.up.data());
      swiglu(s.gate, s.up);
      linear(L.w2[e], s.gate.data(), m, s.down.data());
      for (int64_t r = 0; r < m; ++r)
        for (int64_t t = 0; t < d; ++t) s.o[rows[r] * d + t] += rw[r] * s.down[r * d + t];
    }
    for (int64_t i = 0; i < n * d; ++i) s.x[i] += s.o[i];
  }
  cache.size_ = p0 + n;

  const int64_t first = opt.all_logits ? 0 : n - 1;
  const int64_t rows_out = n - first;
  rmsnorm_rows(s.x.data() + first * d, rows_out, d, weights_.final_norm, c.rms_norm_eps, s.xn.data());
  std::vector<float> logits(rows_out * c.vocab_size);
  linear(weights_.head, s.xn.data(), rows_out, logits.data());
  return logits;
}

}  // namespace epwa
