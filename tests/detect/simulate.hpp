// A stand-in for the engine: random router logits per position and random next-token logits with a
// realistic entropy, sampled through the WatermarkProcessor exactly as the sampler would use it.
#pragma once
#include <cmath>
#include <random>
#include <vector>

#include "epwa/detect.hpp"
#include "epwa/watermark.hpp"

namespace sim {

struct Sequence {
  std::vector<int32_t> tokens;
  std::vector<float> router_logits;  // positions x E
  int64_t prompt_tokens = 0;
  double mean_entropy = 0.0;  // nats, of the unbiased next-token distributions
};

// Generates prompt_tokens context tokens (BOS = 1 first) and `generate` sampled ones. With a null
// processor the text is unwatermarked.
inline Sequence generate(std::mt19937_64& rng, int32_t V, int32_t E, int32_t layer,
                         int64_t prompt_tokens, int64_t generate, double logit_scale,
                         epwa::WatermarkProcessor* wm) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::uniform_int_distribution<int32_t> any_token(3, V - 1);
  Sequence s;
  s.prompt_tokens = prompt_tokens;
  s.tokens.push_back(1);
  for (int64_t i = 1; i < prompt_tokens; ++i) s.tokens.push_back(any_token(rng));
  std::vector<float> logits(static_cast<size_t>(V));
  std::vector<double> prob(static_cast<size_t>(V));
  auto route = [&](int64_t pos) {  // the router of position pos
    std::vector<float> r(static_cast<size_t>(E));
    for (float& x : r) x = 1.5f * normal(rng);
    s.router_logits.insert(s.router_logits.end(), r.begin(), r.end());
    if (wm != nullptr) {
      const std::vector<int32_t> topk = {0};
      const std::vector<float> w = {1.0f};
      wm->observe({layer, pos, r, topk, w});
    }
  };
  for (int64_t pos = 0; pos + 1 < prompt_tokens; ++pos) route(pos);
  for (int64_t t = std::max<int64_t>(prompt_tokens, 1); t < prompt_tokens + generate; ++t) {
    route(t - 1);  // forward pass of position t-1 produces the logits of token t
    for (float& x : logits) x = static_cast<float>(logit_scale) * normal(rng);
    double m = -1e30, z = 0.0, h = 0.0;
    for (float x : logits) m = std::max(m, static_cast<double>(x));
    for (float x : logits) z += std::exp(x - m);
    for (float x : logits) {
      const double p = std::exp(x - m) / z;
      if (p > 0) h -= p * std::log(p);
    }
    s.mean_entropy += h;
    if (wm != nullptr) wm->process(logits);
    m = -1e30;
    for (float x : logits) m = std::max(m, static_cast<double>(x));
    double sum = 0.0;
    for (int32_t v = 0; v < V; ++v) sum += prob[v] = std::exp(logits[v] - m);
    double u = uni(rng) * sum;
    int32_t pick = V - 1;
    for (int32_t v = 0; v < V; ++v)
      if ((u -= prob[v]) <= 0) {
        pick = v;
        break;
      }
    s.tokens.push_back(pick);
  }
  s.mean_entropy /= static_cast<double>(generate);
  return s;
}

}  // namespace sim
