// Quality of a quantized model against a reference: next-token and router agreement.
#include "epwa/quant_quality.hpp"

#include <algorithm>
#include <cmath>

#include "epwa/error.hpp"

namespace epwa {

namespace {

// Top-1 expert of every (layer, position), ties -> lower index (the watermark's rule).
struct Top1Recorder : RouterObserver {
  std::vector<std::vector<int32_t>> top1;  // [layer][position]
  void observe(const RouterObservation& o) override {
    if (top1.size() <= static_cast<size_t>(o.layer)) top1.resize(o.layer + 1);
    const auto it = std::max_element(o.logits.begin(), o.logits.end());
    top1[o.layer].push_back(static_cast<int32_t>(it - o.logits.begin()));
  }
};

void log_softmax(const float* x, int64_t n, std::vector<double>& out) {
  out.resize(n);
  double mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, double{x[i]});
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(x[i] - mx);
  const double lse = mx + std::log(sum);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] - lse;
}

}  // namespace

QuantQuality compare_models(Model& ref, Model& test,
                            std::span<const std::vector<int32_t>> sequences,
                            int32_t watermark_layer) {
  const int64_t v = ref.config().vocab_size;
  const int32_t layers = ref.config().num_layers;
  check(test.config().vocab_size == v && test.config().num_layers == layers,
        "compare_models: the models differ in vocabulary or layer count");
  if (watermark_layer < 0) watermark_layer = layers - 1;
  check(watermark_layer < layers, "compare_models: watermark layer " +
                                      std::to_string(watermark_layer) + " out of range (" +
                                      std::to_string(layers) + " layers)");
  QuantQuality q;
  std::vector<int64_t> router_same(layers, 0);
  double nll_ref = 0, nll_test = 0, kl = 0;
  int64_t top1_same = 0;
  std::vector<double> lr, lt;
  const int64_t ctx = std::min<int64_t>(ref.config().max_position_embeddings, 512);
  for (const auto& full : sequences) {
    if (full.size() < 2) continue;
    const std::vector<int32_t> seq(full.begin(),
                                   full.begin() + std::min<int64_t>(full.size(), ctx));
    const int64_t n = static_cast<int64_t>(seq.size());
    Top1Recorder rr, rt;
    ForwardOptions fo;
    fo.all_logits = true;
    auto cr = ref.make_context(n), ct = test.make_context(n);
    fo.observer = &rr;
    const auto a = ref.forward(seq, cr, fo);
    fo.observer = &rt;
    const auto b = test.forward(seq, ct, fo);
    for (int64_t i = 0; i + 1 < n; ++i) {
      log_softmax(a.data() + i * v, v, lr);
      log_softmax(b.data() + i * v, v, lt);
      nll_ref -= lr[seq[i + 1]];
      nll_test -= lt[seq[i + 1]];
      double k = 0;
      for (int64_t t = 0; t < v; ++t) k += std::exp(lr[t]) * (lr[t] - lt[t]);
      kl += k;
      top1_same += (std::max_element(lr.begin(), lr.end()) - lr.begin()) ==
                   (std::max_element(lt.begin(), lt.end()) - lt.begin());
      ++q.positions;
    }
    for (int32_t l = 0; l < layers && l < static_cast<int32_t>(rr.top1.size()); ++l)
      for (int64_t i = 0; i < n; ++i) router_same[l] += rr.top1[l][i] == rt.top1[l][i];
    q.router_positions += n;
  }
  check(q.positions > 0, "compare_models: no sequence of at least 2 tokens");
  q.ref_perplexity = std::exp(nll_ref / q.positions);
  q.perplexity = std::exp(nll_test / q.positions);
  q.mean_kl = kl / q.positions;
  q.top1_agreement = static_cast<double>(top1_same) / q.positions;
  for (int32_t l = 0; l < layers; ++l)
    q.router_agreement.push_back(static_cast<double>(router_same[l]) / q.router_positions);
  q.watermark_layer_agreement = q.router_agreement[watermark_layer];
  return q;
}

}  // namespace epwa
