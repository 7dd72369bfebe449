// The pathway of one position, its top-1 expert and router confidence (docs/SPEC.md sections 0 and
// 3), read from the router logits under the layer's rule.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/watermark.hpp"

namespace epwa {
namespace {

// The k best of `v` by value (ties to the lower index), best first.
std::vector<int32_t> best_k(std::span<const float> v, size_t k) {
  std::vector<int32_t> idx(v.size());
  for (size_t i = 0; i < v.size(); ++i) idx[i] = static_cast<int32_t>(i);
  std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(),
                    [&](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  idx.resize(k);
  return idx;
}

ExpertChoice softmax_choice(std::span<const float> l, int32_t over) {
  int32_t best = 0;
  for (size_t e = 1; e < l.size(); ++e)
    if (l[e] > l[static_cast<size_t>(best)]) best = static_cast<int32_t>(e);
  const double top = l[static_cast<size_t>(best)];
  double sum = 0.0;
  if (over > 0 && static_cast<size_t>(over) < l.size()) {
    // The `over` largest logits: which of equal values is taken does not change the sum.
    std::vector<float> sorted(l.begin(), l.end());
    std::partial_sort(sorted.begin(), sorted.begin() + over, sorted.end(), std::greater<>());
    for (int32_t i = 0; i < over; ++i) sum += std::exp(static_cast<double>(sorted[i]) - top);
  } else {
    for (float x : l) sum += std::exp(static_cast<double>(x) - top);
  }
  return {best, static_cast<float>(1.0 / sum)};
}

// DeepSeek-V3's choice, in the engine's f32 arithmetic so that the top-1 is the first expert of
// the model's own selection: s = f32 of the sigmoid in double, c = s + b in f32, a group's score
// the f32 sum of its two best c.
ExpertChoice sigmoid_choice(std::span<const float> l, const PathwayRule& r) {
  const size_t ne = l.size(), groups = static_cast<size_t>(r.groups);
  check(r.selection_bias.size() == ne && r.groups >= 1 && ne % groups == 0 && r.groups_kept >= 1 &&
            r.groups_kept <= r.groups && r.top_k >= 1 &&
            static_cast<size_t>(r.top_k) <= ne / groups * static_cast<size_t>(r.groups_kept) &&
            (r.groups == 1 || ne / groups >= 2),
        "router pathway rule: " + std::to_string(r.selection_bias.size()) + " bias values, " +
            std::to_string(r.groups) + " groups (" + std::to_string(r.groups_kept) +
            " kept) and top-" + std::to_string(r.top_k) + " do not fit " + std::to_string(ne) +
            " experts");
  std::vector<float> s(ne), c(ne);
  for (size_t e = 0; e < ne; ++e) {
    s[e] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(l[e]))));
    c[e] = s[e] + r.selection_bias[e];
  }
  if (r.groups > 1) {
    const size_t gsize = ne / groups;
    std::vector<float> gscore(groups);
    for (size_t g = 0; g < groups; ++g) {
      const auto two = best_k(std::span<const float>(c).subspan(g * gsize, gsize), 2);
      gscore[g] = c[g * gsize + two[0]] + c[g * gsize + two[1]];
    }
    const auto kept = best_k(gscore, static_cast<size_t>(r.groups_kept));
    for (size_t g = 0; g < groups; ++g)
      if (std::find(kept.begin(), kept.end(), static_cast<int32_t>(g)) == kept.end())
        std::fill_n(c.begin() + static_cast<std::ptrdiff_t>(g * gsize), gsize,
                    -std::numeric_limits<float>::infinity());
  }
  const auto chosen = best_k(c, static_cast<size_t>(r.top_k));
  const double top = s[static_cast<size_t>(chosen[0])];
  double sum = 0.0;
  for (int32_t e : chosen) sum += s[static_cast<size_t>(e)];
  return {chosen[0], static_cast<float>(r.renormalize ? top / sum : top)};
}

}  // namespace

ExpertChoice top1_expert(std::span<const float> router_logits, const PathwayRule& rule) {
  check(!router_logits.empty(), "router logits are empty");
  for (size_t e = 0; e < router_logits.size(); ++e)
    check(std::isfinite(router_logits[e]),
          "router logit of expert " + std::to_string(e) + " is not finite");
  return rule.sigmoid() ? sigmoid_choice(router_logits, rule)
                        : softmax_choice(router_logits, rule.confidence_over);
}

ExpertChoice top1_expert(const RouterObservation& obs) {
  static const PathwayRule softmax_over_all;
  return top1_expert(obs.logits, obs.pathway ? *obs.pathway : softmax_over_all);
}

}  // namespace epwa
