// Scrubbing: token substitutions under an edit budget, aimed at the tokens learned green
// (informed) or at random positions (blind, the control).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "epwa/attack.hpp"
#include "epwa/error.hpp"
#include "epwa/eval.hpp"
#include "epwa/session.hpp"

namespace epwa::attack {

namespace {

// Which text positions to edit, `edits` of them: informed, those whose token has the largest
// learned weight (> 0) first; the rest of the budget (all of it when blind) at random positions,
// so that both spend the same budget.
std::vector<bool> edit_positions(Model& model, Scheme scheme, int32_t layer,
                                 const StolenLists* stolen, std::span<const int32_t> prompt,
                                 std::span<const int32_t> text, size_t edits, uint64_t seed,
                                 const Oracle* oracle) {
  std::vector<bool> edit(text.size(), false);
  size_t chosen = 0;
  if (stolen != nullptr) {
    // The contexts of the original text: the attacker plans on the text as it stands.
    std::vector<int32_t> seq(prompt.begin(), prompt.end());
    seq.insert(seq.end(), text.begin(), text.end() - 1);
    const std::vector<int32_t> ctx = contexts_of(model, scheme, seq, layer, oracle);
    std::vector<std::pair<double, size_t>> w;  // (-weight, position): heaviest first
    for (size_t i = 0; i < text.size(); ++i)
      if (const double x = stolen->weight(ctx[prompt.size() - 1 + i], text[i]); x > 0)
        w.emplace_back(-x, i);
    std::sort(w.begin(), w.end());
    for (; chosen < std::min(edits, w.size()); ++chosen) edit[w[chosen].second] = true;
  }
  std::vector<size_t> rest;
  for (size_t i = 0; i < text.size(); ++i)
    if (!edit[i]) rest.push_back(i);
  eval::Rng rng(seed);
  for (size_t i = 0; chosen < edits; ++i, ++chosen) {
    std::swap(rest[i], rest[i + rng.below(rest.size() - i)]);
    edit[rest[i]] = true;
  }
  return edit;
}

// The replacement at one position: the most likely of the top_k (not suppressed, not the
// original); informed, the most likely of those with the smallest learned weight.
int32_t replacement(std::vector<float> logits, int32_t original, const ScrubOptions& o,
                    const StolenLists* stolen, int32_t context) {
  const float off = -std::numeric_limits<float>::infinity();
  for (int32_t s : o.suppress_tokens) logits[static_cast<size_t>(s)] = off;
  logits[static_cast<size_t>(original)] = off;
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  const auto k = std::min(order.size(), static_cast<size_t>(o.top_k));
  std::partial_sort(
      order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
      [&](int32_t a, int32_t b) {
        return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
               (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
      });
  int32_t best = order[0];
  if (stolen != nullptr) {
    double best_w = std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < k; ++i)
      if (const double w = stolen->weight(context, order[i]); w < best_w) {
        best_w = w;
        best = order[i];
      }
  }
  return best;
}

}  // namespace

std::vector<int32_t> scrub(Model& model, Scheme scheme, int32_t layer, const StolenLists* stolen,
                           std::span<const int32_t> prompt, std::span<const int32_t> text,
                           const ScrubOptions& o, const Oracle* oracle) {
  check(o.budget >= 0 && o.budget <= 1, "attack: the scrub budget must be in [0, 1]");
  check(o.top_k >= 1, "attack: the scrub top-k must be >= 1");
  check(!prompt.empty(), "attack: the prompt is empty");
  check(stolen == nullptr || stolen->scheme() == scheme, "attack: stolen lists of another scheme");
  if (text.empty()) return {};
  layer = model_router_layer(model, layer);
  const auto edits = static_cast<size_t>(std::floor(o.budget * static_cast<double>(text.size())));
  const std::vector<bool> edit =
      edit_positions(model, scheme, layer, stolen, prompt, text, edits, o.seed, oracle);

  // Re-decode: the unchanged stretches go through the model in one call each; at an edited
  // position the distribution (and context) given the rewritten prefix picks the replacement.
  ContextTracker tracker(scheme, layer, model.config().vocab_size, oracle);
  ForwardOptions fo;
  fo.observer = &tracker;
  fo.watch = {layer};
  Context cache = model.make_context(static_cast<int64_t>(prompt.size() + text.size()));
  std::vector<int32_t> out, pending(prompt.begin(), prompt.end());
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (edit[i]) {
      const std::vector<float> logits = model.forward(pending, cache, fo);
      for (int32_t t : pending) tracker.push(t);
      tracker.see(logits);
      pending.clear();
      const int32_t r = replacement(logits, text[i], o, stolen, tracker.context());
      out.push_back(r);
    } else {
      out.push_back(text[i]);
    }
    pending.push_back(out.back());
  }
  return out;
}

}  // namespace epwa::attack
