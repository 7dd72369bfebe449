// The estimator: per (context, token), how often the token followed the context in watermarked
// text against how often the public model alone would have produced it there.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

#include "epwa/attack.hpp"
#include "epwa/error.hpp"
#include "epwa/eval.hpp"
#include "epwa/pepi.hpp"
#include "epwa/session.hpp"
#include "epwa/thread_pool.hpp"
#include "epwa/thread_scratch.hpp"

namespace epwa::attack {

double StolenLists::score(const PairCount& p) {
  return std::log((p.observed + 1.0) / (p.expected + 1.0));
}

double StolenLists::weight(const PairCount& p) {
  return std::clamp(score(p), 0.0, 1.0);
}

std::span<const PairCount> StolenLists::pairs(int32_t context) const {
  check(context >= 0 && context < contexts(), "attack: context out of range");
  return pairs_[static_cast<size_t>(context)];
}

double StolenLists::weight(int32_t context, int32_t token) const {
  const auto p = pairs(context);
  const auto it = std::lower_bound(p.begin(), p.end(), token,
                                   [](const PairCount& a, int32_t t) { return a.token < t; });
  return it != p.end() && it->token == token ? weight(*it) : 0.0;
}

void StolenLists::add_bias(int32_t context, double scale, std::span<float> logits) const {
  for (const PairCount& p : pairs(context))
    if (const double w = weight(p); w > 0 && p.token < static_cast<int32_t>(logits.size()))
      logits[static_cast<size_t>(p.token)] += static_cast<float>(scale * w);
}

void StolenLists::add(int32_t context, std::vector<PairCount> pairs) {
  check(context >= 0 && context < contexts(), "attack: context out of range");
  pairs_[static_cast<size_t>(context)] = std::move(pairs);
}

int64_t StolenLists::pair_count() const {
  int64_t n = 0;
  for (const auto& p : pairs_) n += static_cast<int64_t>(p.size());
  return n;
}

namespace {

// The pairs of one context whose counts are kept, sorted by token.
struct Tracked {
  std::vector<int32_t> tokens;
  std::vector<double> observed, expected;
  size_t index(int32_t token) const {
    return static_cast<size_t>(std::lower_bound(tokens.begin(), tokens.end(), token) -
                               tokens.begin());
  }
};

// EPW-A: every token of every expert (E x V is small). KGW: only the (previous, next) pairs that
// occur in the texts (V x V is not small); a pair first seen after a checkpoint has no weight at
// that checkpoint, so tracking it from the start leaks nothing. EpwaCtx: for each expert, the
// tokens seen after the previous token (the experts are known only after the passes).
std::vector<Tracked> tracked_pairs(Scheme scheme, int32_t contexts, int32_t vocab,
                                   std::span<const ObservedText> texts, int64_t limit) {
  std::vector<Tracked> t(static_cast<size_t>(contexts));
  if (scheme == Scheme::Epwa) {
    for (Tracked& c : t) {
      c.tokens.resize(static_cast<size_t>(vocab));
      std::iota(c.tokens.begin(), c.tokens.end(), 0);
    }
  } else {
    int64_t seen = 0;
    for (const ObservedText& x : texts) {  // (EpwaCtx: collected in contexts 0 .. V-1 first)
      int32_t prev = x.prompt.back();
      for (int32_t tok : x.text) {
        if (seen++ == limit) break;
        t[static_cast<size_t>(prev)].tokens.push_back(tok);
        prev = tok;
      }
    }
    for (Tracked& c : t) {
      std::sort(c.tokens.begin(), c.tokens.end());
      c.tokens.erase(std::unique(c.tokens.begin(), c.tokens.end()), c.tokens.end());
    }
    if (scheme == Scheme::EpwaCtx)  // contexts e * V + prev: copy prev's tokens to every e
      for (size_t c = static_cast<size_t>(vocab); c < t.size(); ++c)
        t[c].tokens = t[c % static_cast<size_t>(vocab)].tokens;
  }
  for (Tracked& c : t) {
    c.observed.assign(c.tokens.size(), 0.0);
    c.expected.assign(c.tokens.size(), 0.0);
  }
  return t;
}

StolenLists snapshot(Scheme scheme, int32_t vocab, const std::vector<Tracked>& tracked,
                     int64_t observed_tokens, int64_t expert_hits) {
  StolenLists s(scheme, static_cast<int32_t>(tracked.size()), vocab);
  s.observed_tokens = observed_tokens;
  s.expert_hits = expert_hits;
  for (size_t c = 0; c < tracked.size(); ++c) {
    const Tracked& t = tracked[c];
    std::vector<PairCount> seen;
    for (size_t i = 0; i < t.tokens.size(); ++i)
      if (t.observed[i] > 0) seen.push_back({t.tokens[i], t.observed[i], t.expected[i]});
    s.add(static_cast<int32_t>(c), std::move(seen));
  }
  return s;
}

void check_checkpoints(std::span<const int64_t> checkpoints) {
  check(!checkpoints.empty(), "attack: no checkpoint (numbers of observed tokens)");
  check(std::is_sorted(checkpoints.begin(), checkpoints.end()) && checkpoints.front() > 0,
        "attack: checkpoints must be positive and ascending");
}

// Keeps the top-1 expert of one layer, one entry per position.
struct ExpertRecorder : RouterObserver {
  int32_t layer = 0;
  std::vector<int32_t> experts;
  void observe(const RouterObservation& o) override {
    if (o.layer == layer) experts.push_back(top1_expert(o).expert);
  }
};

// One observed text's teacher-forced pass: for each of its tokens, the context that governed it,
// the logits it was drawn from (one row of V each) and whether the context's expert was the
// router's.
struct Pass {
  std::vector<int32_t> contexts;
  std::vector<float> logits;
  std::vector<bool> hit;
};

Pass teacher_forced(Model& model, Scheme scheme, int32_t layer, const ObservedText& x,
                    const Oracle* oracle) {
  const auto vocab = static_cast<size_t>(model.config().vocab_size);
  // The governing positions: the last prompt token and the text but its last token.
  std::vector<int32_t> seq = x.prompt;
  seq.insert(seq.end(), x.text.begin(), x.text.end() - 1);
  const size_t first = x.prompt.size() - 1;
  ExpertRecorder rec;
  rec.layer = layer;
  ForwardOptions fo;
  fo.all_logits = true;
  if (scheme != Scheme::Kgw) {
    fo.observer = &rec;
    fo.watch = {layer};
  }
  Pass out;
  out.logits.reserve(x.text.size() * vocab);
  Context cache = model.make_context(static_cast<int64_t>(seq.size()));
  constexpr size_t kChunk = 256;  // bounds the logits of prompt positions held at once
  for (size_t at = 0; at < seq.size(); at += kChunk) {
    const auto part = std::span<const int32_t>(seq).subspan(at, std::min(kChunk, seq.size() - at));
    const std::vector<float> logits = model.forward(part, cache, fo);
    const size_t skip = first > at ? std::min(first - at, part.size()) : 0;
    out.logits.insert(out.logits.end(), logits.begin() + static_cast<std::ptrdiff_t>(skip * vocab),
                      logits.end());
  }
  const auto v = static_cast<int32_t>(vocab);
  for (size_t p = first; p < seq.size(); ++p) {
    int32_t e = scheme == Scheme::Kgw ? 0 : rec.experts[p];
    if (oracle && scheme != Scheme::Kgw) {
      const int32_t guess = oracle_expert(
          *oracle, std::span<const float>(out.logits).subspan((p - first) * vocab, vocab),
          std::span<const int32_t>(seq).first(p + 1));
      out.hit.push_back(guess == e);
      e = guess;
    } else {
      out.hit.push_back(true);
    }
    out.contexts.push_back(context_id(scheme, e, seq[p], v));
  }
  return out;
}

}  // namespace

void top_k_mask(std::span<const float> values, int32_t k, std::vector<uint8_t>& mask) {
  const size_t n = values.size();
  if (k <= 0 || static_cast<size_t>(k) >= n) {
    mask.assign(n, 1);
    return;
  }
  thread_local ThreadScratch<std::vector<int32_t>> order_tls;
  std::vector<int32_t>& order = *order_tls;
  order.resize(n);
  std::iota(order.begin(), order.end(), 0);
  std::nth_element(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    return values[static_cast<size_t>(a)] > values[static_cast<size_t>(b)] ||
           (values[static_cast<size_t>(a)] == values[static_cast<size_t>(b)] && a < b);
  });
  mask.assign(n, 0);
  for (int32_t i = 0; i < k; ++i) mask[static_cast<size_t>(order[static_cast<size_t>(i)])] = 1;
}

std::vector<StolenLists> steal(Model& model, Scheme scheme, int32_t layer,
                               std::span<const ObservedText> texts,
                               std::span<const int64_t> checkpoints, float temperature,
                               const std::function<void(int64_t)>& progress, const Oracle* oracle,
                               int32_t api_top_k) {
  check_checkpoints(checkpoints);
  check(api_top_k >= 0, "attack: the API's top k must not be negative");
  check(temperature > 0, "attack: the base distribution needs a temperature > 0");
  const ModelConfig& c = model.config();
  const int32_t vocab = c.vocab_size;
  const int32_t contexts = scheme == Scheme::Epwa  ? c.num_experts
                           : scheme == Scheme::Kgw ? vocab
                                                   : c.num_experts * vocab;
  layer = model_router_layer(model, layer);
  for (const ObservedText& x : texts) check(!x.prompt.empty(), "attack: a prompt is empty");
  std::vector<Tracked> tracked = tracked_pairs(scheme, contexts, vocab, texts, checkpoints.back());
  // Each text's tokens up to the last checkpoint.
  std::vector<size_t> take(texts.size());
  int64_t left = checkpoints.back();
  for (size_t i = 0; i < texts.size(); ++i) {
    take[i] = static_cast<size_t>(std::min<int64_t>(left, std::ssize(texts[i].text)));
    left -= static_cast<int64_t>(take[i]);
  }

  // The passes run a batch of texts at a time, one text per thread of the kernels' pool (its
  // forward nested, so serial); the counts are added in text order, so the estimates do not
  // depend on the thread count.
  ThreadPool& pool = ThreadPool::global();
  const size_t batch = 2 * static_cast<size_t>(pool.size());
  std::vector<StolenLists> out;
  int64_t seen = 0, hits = 0;
  std::vector<double> probs(static_cast<size_t>(vocab));
  std::vector<uint8_t> top;
  const bool api = api_top_k > 0 && api_top_k < vocab;
  const double inv_t = 1.0 / temperature;
  for (size_t b = 0; b < texts.size(); b += batch) {
    std::vector<Pass> passes(std::min(batch, texts.size() - b));
    pool.parallel_for(std::ssize(passes), [&](int64_t i0, int64_t i1) {
      for (auto i = static_cast<size_t>(i0); i < static_cast<size_t>(i1); ++i) {
        // The whole text, also past the last checkpoint: a pass cut there batches its rows
        // differently, so its logits (and near-tied routers) can differ in the last bits from a
        // run with a larger N. Whole passes give each N the same estimate in every run.
        if (take[b + i] > 0) passes[i] = teacher_forced(model, scheme, layer, texts[b + i], oracle);
      }
    });
    for (size_t i = 0; i < passes.size(); ++i) {
      const ObservedText& x = texts[b + i];
      for (size_t j = 0; j < take[b + i]; ++j) {
        const float* row = passes[i].logits.data() + j * static_cast<size_t>(vocab);
        const double mx = *std::max_element(row, row + vocab);
        double z = 0;
        for (int32_t v = 0; v < vocab; ++v)
          z += probs[static_cast<size_t>(v)] = std::exp((row[v] - mx) * inv_t);
        if (api) {
          // The API attacker: the top k as they are, the rest of the mass spread evenly.
          top_k_mask({row, static_cast<size_t>(vocab)}, api_top_k, top);
          double kept = 0;
          for (int32_t v = 0; v < vocab; ++v)
            if (top[static_cast<size_t>(v)]) kept += probs[static_cast<size_t>(v)];
          const double rest = (z - kept) / static_cast<double>(vocab - api_top_k);
          for (int32_t v = 0; v < vocab; ++v)
            if (!top[static_cast<size_t>(v)]) probs[static_cast<size_t>(v)] = rest;
        }
        Tracked& t = tracked[static_cast<size_t>(passes[i].contexts[j])];
        for (size_t k = 0; k < t.tokens.size(); ++k)
          t.expected[k] += probs[static_cast<size_t>(t.tokens[k])] / z;
        t.observed[t.index(x.text[j])] += 1;
        ++seen;
        hits += passes[i].hit[j];
        while (out.size() < checkpoints.size() && seen == checkpoints[out.size()])
          out.push_back(snapshot(scheme, vocab, tracked, seen, hits));
      }
      if (take[b + i] > 0 && progress) progress(seen);
    }
    if (out.size() == checkpoints.size()) break;
  }
  // Fewer tokens than the largest checkpoints: those get everything seen.
  while (out.size() < checkpoints.size())
    out.push_back(snapshot(scheme, vocab, tracked, seen, hits));
  return out;
}

std::vector<double> unigram_base(std::span<const int32_t> tokens, int32_t vocab) {
  check(vocab > 0, "attack: the unigram base needs a vocabulary");
  std::vector<double> p(static_cast<size_t>(vocab), 1.0);
  for (int32_t t : tokens) {
    check(t >= 0 && t < vocab, "attack: a token of the attacker's text is out of the vocabulary");
    p[static_cast<size_t>(t)] += 1;
  }
  const double total = static_cast<double>(tokens.size()) + vocab;
  for (double& x : p) x /= total;
  return p;
}

std::vector<StolenLists> steal_text_only(std::span<const ObservedText> texts,
                                         std::span<const int64_t> checkpoints,
                                         std::span<const double> base) {
  check_checkpoints(checkpoints);
  const auto vocab = static_cast<int32_t>(base.size());
  for (const ObservedText& x : texts) check(!x.prompt.empty(), "attack: a prompt is empty");
  std::vector<Tracked> tracked =
      tracked_pairs(Scheme::Kgw, vocab, vocab, texts, checkpoints.back());
  std::vector<StolenLists> out;
  int64_t seen = 0;
  for (const ObservedText& x : texts) {
    int32_t prev = x.prompt.back();
    for (int32_t tok : x.text) {
      if (out.size() == checkpoints.size()) break;
      check(prev >= 0 && prev < vocab && tok >= 0 && tok < vocab,
            "attack: an observed token is out of the vocabulary");
      Tracked& t = tracked[static_cast<size_t>(prev)];
      for (size_t k = 0; k < t.tokens.size(); ++k)
        t.expected[k] += base[static_cast<size_t>(t.tokens[k])];
      t.observed[t.index(tok)] += 1;
      ++seen;
      while (out.size() < checkpoints.size() && seen == checkpoints[out.size()])
        out.push_back(snapshot(Scheme::Kgw, vocab, tracked, seen, 0));
      prev = tok;
    }
  }
  while (out.size() < checkpoints.size())
    out.push_back(snapshot(Scheme::Kgw, vocab, tracked, seen, 0));
  return out;
}

namespace {

double auc_or_half(const std::vector<double>& pos, const std::vector<double>& neg) {
  return pos.empty() || neg.empty() ? 0.5 : eval::roc_auc(pos, neg);
}

}  // namespace

namespace {

// The truth's list for an attacker's context.
int32_t truth_context(const StolenLists& s, const GreenLists& truth, int32_t c) {
  return s.scheme() == Scheme::EpwaCtx ? truth.context(c / s.vocab(), c % s.vocab()) : c;
}

}  // namespace

double context_auc(const StolenLists& stolen, const GreenLists& truth, int32_t context) {
  std::vector<double> pos, neg;
  const int32_t tc = truth_context(stolen, truth, context);
  for (const PairCount& p : stolen.pairs(context))
    (truth.is_green(tc, p.token) ? pos : neg).push_back(StolenLists::score(p));
  return auc_or_half(pos, neg);
}

ScoreQuality score_quality(const StolenLists& stolen, const GreenLists& truth,
                           int32_t max_contexts) {
  const int64_t contexts = stolen.scheme() == Scheme::EpwaCtx
                               ? int64_t{truth.num_experts()} * truth.vocab_size()
                               : truth.num_contexts();
  check(contexts == stolen.contexts() && truth.vocab_size() == stolen.vocab(),
        "attack: the green lists do not match the stolen lists");
  ScoreQuality q;
  std::vector<double> pos, neg;
  int64_t green_est = 0;
  std::vector<std::tuple<double, int32_t, int64_t>> busiest;  // (-observations, context, green)
  for (int32_t c = 0; c < stolen.contexts(); ++c) {
    double n = 0;
    int64_t held = 0;
    const int32_t tc = stolen.pairs(c).empty() ? 0 : truth_context(stolen, truth, c);
    for (const PairCount& p : stolen.pairs(c)) {
      const bool green = truth.is_green(tc, p.token);
      (green ? pos : neg).push_back(StolenLists::score(p));
      if (StolenLists::weight(p) > 0) {
        ++q.estimated_green;
        held += green;
      }
      n += p.observed;
    }
    green_est += held;
    if (n > 0) busiest.emplace_back(-n, c, held);
  }
  q.auc_seen = auc_or_half(pos, neg);
  q.precision = q.estimated_green > 0 ? static_cast<double>(green_est) / q.estimated_green : 0;
  std::sort(busiest.begin(), busiest.end());
  busiest.resize(std::min(busiest.size(), static_cast<size_t>(max_contexts)));
  double auc = 0, coverage = 0;
  for (const auto& [n, c, held] : busiest) {
    auc += context_auc(stolen, truth, c);
    coverage += static_cast<double>(held) / truth.green_count();
  }
  if (!busiest.empty()) {
    q.auc_context = auc / static_cast<double>(busiest.size());
    q.coverage = coverage / static_cast<double>(busiest.size());
  }
  return q;
}

}  // namespace epwa::attack
