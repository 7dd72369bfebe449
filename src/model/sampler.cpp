#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "epwa/error.hpp"
#include "epwa/generate.hpp"

namespace epwa {

Sampler::Sampler(const SamplingOptions& o) : opt_(o), state_(o.seed) {
  check(o.temperature >= 0, "temperature must be >= 0");
  check(o.top_k >= 0, "top-k must be >= 0");
  check(o.top_p > 0 && o.top_p <= 1, "top-p must be in (0, 1]");
}

double Sampler::uniform() {  // splitmix64, top 53 bits
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

int32_t Sampler::sample(std::span<float> logits, const KeyedUniforms* keyed) {
  const int32_t v = static_cast<int32_t>(logits.size());
  if (opt_.temperature == 0.0f)
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  // Candidates sorted by logit (ties to the lower id), cut by top-k, then softmax at temperature.
  order_.resize(v);
  std::iota(order_.begin(), order_.end(), 0);
  const int32_t k = opt_.top_k > 0 ? std::min(opt_.top_k, v) : v;
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), better);
  order_.resize(k);
  const double mx = logits[order_[0]];
  std::vector<double> p(k);
  double z = 0;
  for (int32_t i = 0; i < k; ++i)
    z += (p[i] = std::exp((logits[order_[i]] - mx) / opt_.temperature));
  int32_t keep = k;
  if (opt_.top_p < 1.0f) {
    double cum = 0;
    for (int32_t i = 0; i < k; ++i) {
      cum += p[i] / z;
      if (cum >= opt_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0;
  for (int32_t i = 0; i < keep; ++i) total += p[i];
  if (keyed) {  // exponential race: ties to the earlier candidate (higher logit, lower id)
    int32_t best = 0;
    double best_score = -std::numeric_limits<double>::infinity();
    for (int32_t i = 0; i < keep; ++i) {
      const double score = std::log(keyed->uniform(order_[i])) / (p[i] / total);
      if (score > best_score) best_score = score, best = i;
    }
    return order_[best];
  }
  double r = uniform() * total;
  for (int32_t i = 0; i < keep; ++i) {
    r -= p[i];
    if (r < 0) return order_[i];
  }
  return order_[keep - 1];
}

void forbid(std::span<float> logits, std::span<const int32_t> ids) {
  for (int32_t t : ids)
    if (t >= 0 && static_cast<size_t>(t) < logits.size())
      logits[static_cast<size_t>(t)] = -std::numeric_limits<float>::infinity();
}

int32_t max_generated_tokens(const Model& model, int64_t prompt_tokens, int32_t max_new_tokens) {
  const int64_t room = int64_t{model.config().max_position_embeddings} - prompt_tokens;
  return static_cast<int32_t>(std::clamp<int64_t>(room, 0, max_new_tokens));
}

std::vector<int32_t> generate(Model& model, std::span<const int32_t> prompt,
                              const GenerateOptions& o) {
  check(!prompt.empty(), "generate: the prompt is empty (it needs at least a BOS token)");
  check(o.max_new_tokens >= 0, "max-new-tokens must be >= 0");
  check(o.min_new_tokens >= 0, "min-new-tokens must be >= 0");
  check(o.min_new_tokens == 0 || !o.constraint,
        "generate: min-new-tokens and a JSON constraint exclude each other (a finished value "
        "allows only a stop token)");
  for (int32_t t : o.suppress_tokens)
    check(t >= 0 && t < model.config().vocab_size,
          "generate: suppressed token " + std::to_string(t) + " is outside the vocabulary");
  Sampler sampler(o.sampling);
  const int32_t n =
      max_generated_tokens(model, static_cast<int64_t>(prompt.size()), o.max_new_tokens);
  // Room for a short text; the context doubles as the text grows (forward() reserves).
  constexpr int32_t kInitialRoom = 256;
  Context cache =
      model.make_context(static_cast<int64_t>(prompt.size()) + std::min(n, kInitialRoom) + 1);
  ForwardOptions fo;
  fo.observer = o.observer;
  if (o.observer) fo.watch = o.observer->layers();
  std::vector<int32_t> out;
  std::vector<float> logits = model.forward(prompt, cache, fo);
  for (int32_t i = 0; i < n; ++i) {
    if (o.processor) o.processor->process(logits);
    forbid(logits, o.suppress_tokens);
    if (i < o.min_new_tokens) forbid(logits, o.stop_tokens);
    if (o.constraint) o.constraint->mask(logits);
    const int32_t t = sampler.sample(logits, o.processor ? o.processor->uniforms() : nullptr);
    if (o.constraint) o.constraint->accept(t);
    out.push_back(t);
    if (o.on_token) o.on_token(t);
    if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), t) != o.stop_tokens.end()) break;
    if (i + 1 == n) break;
    const int32_t tok[1] = {t};
    logits = model.forward(tok, cache, fo);
  }
  return out;
}

}  // namespace epwa
