// An attacker who sorts observed texts by key without being told (defence 2's adversary, issue
// 22): each key raises its own (context, token) pairs above the public model's expectation, so
// texts of one key agree on which pairs come too often. Clustering is hard assignment, k-means
// style: a text joins the cluster whose counts (without the text itself) make its pairs most
// likely against the pooled expectation, until no text moves.
#include <cmath>
#include <random>
#include <unordered_map>

#include "epwa/attack.hpp"
#include "epwa/error.hpp"
#include "epwa/session.hpp"

namespace epwa::attack {

std::vector<int32_t> attacker_contexts(Model& model, Scheme scheme, int32_t layer,
                                       std::span<const int32_t> prompt,
                                       std::span<const int32_t> text, const Oracle* oracle) {
  check(!prompt.empty(), "attack: a prompt is empty");
  if (text.empty()) return {};
  // The positions that govern the text's tokens: the last prompt token and the text but its last.
  std::vector<int32_t> seq(prompt.begin(), prompt.end());
  seq.insert(seq.end(), text.begin(), text.end() - 1);
  std::vector<int32_t> out = contexts_of(model, scheme, seq, layer, oracle);
  out.erase(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(prompt.size() - 1));
  return out;
}

namespace {

uint64_t pair_key(int32_t context, int32_t token) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(context)) << 32) |
         static_cast<uint32_t>(token);
}

// One cluster's counts: pairs seen, and positions per context.
struct Counts {
  std::unordered_map<uint64_t, int32_t> pairs;
  std::unordered_map<int32_t, int32_t> contexts;
};

}  // namespace

Clustering cluster_by_key(const StolenLists& pooled, std::span<const ObservedText> texts,
                          std::span<const std::vector<int32_t>> contexts, size_t k, uint64_t seed,
                          int32_t max_rounds) {
  check(k >= 1 && texts.size() == contexts.size(), "attack: bad clustering input");
  // The pooled expectation of each position's pair, and positions per context over all texts.
  std::unordered_map<int32_t, double> positions;
  for (int32_t c = 0; c < pooled.contexts(); ++c)
    for (const PairCount& p : pooled.pairs(c)) positions[c] += p.observed;
  std::vector<std::vector<double>> expected(texts.size());
  for (size_t t = 0; t < texts.size(); ++t) {
    check(contexts[t].size() == texts[t].text.size(), "attack: contexts do not match a text");
    for (size_t i = 0; i < contexts[t].size(); ++i) {
      const auto ps = pooled.pairs(contexts[t][i]);
      const auto it = std::lower_bound(ps.begin(), ps.end(), texts[t].text[i],
                                       [](const PairCount& a, int32_t v) { return a.token < v; });
      expected[t].push_back(it != ps.end() && it->token == texts[t].text[i] ? it->expected : 0.0);
    }
  }
  std::vector<Counts> counts(k);
  Clustering out;
  out.labels.resize(texts.size());
  std::mt19937_64 rng(seed);
  const auto add = [&](size_t t, size_t c, int32_t sign) {
    for (size_t i = 0; i < contexts[t].size(); ++i) {
      counts[c].pairs[pair_key(contexts[t][i], texts[t].text[i])] += sign;
      counts[c].contexts[contexts[t][i]] += sign;
    }
  };
  for (size_t t = 0; t < texts.size(); ++t) add(t, out.labels[t] = rng() % k, 1);
  // log((observed in the cluster + 1) / (its share of the pooled expectation + 1)) over the text.
  const auto score = [&](size_t t, const Counts& c) {
    double s = 0;
    for (size_t i = 0; i < contexts[t].size(); ++i) {
      const int32_t ctx = contexts[t][i];
      const auto o = c.pairs.find(pair_key(ctx, texts[t].text[i]));
      const auto n = c.contexts.find(ctx);
      const auto all = positions.find(ctx);  // absent only if the pooled pass saw another expert
      const double share = n == c.contexts.end() || all == positions.end() || all->second <= 0
                               ? 0.0
                               : n->second / all->second;
      s += std::log(((o == c.pairs.end() ? 0 : o->second) + 1.0) / (expected[t][i] * share + 1.0));
    }
    return s;
  };
  for (out.rounds = 1; out.rounds <= max_rounds; ++out.rounds) {
    size_t moved = 0;
    for (size_t t = 0; t < texts.size(); ++t) {
      add(t, out.labels[t], -1);
      size_t best = 0;
      double best_score = -INFINITY;
      for (size_t c = 0; c < k; ++c)
        if (const double s = score(t, counts[c]); s > best_score) best = c, best_score = s;
      moved += best != out.labels[t];
      add(t, out.labels[t] = best, 1);
    }
    if (moved == 0) break;
  }
  out.rounds = std::min(out.rounds, max_rounds);
  return out;
}

}  // namespace epwa::attack
