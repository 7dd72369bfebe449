// PEPI features: what the oracle sees of one position (docs/PEPI.md, "Features").
#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>

#include "epwa/error.hpp"
#include "epwa/pepi.hpp"

namespace epwa {

namespace {
constexpr uint32_t kSketchDim = 1024;  // "full": count-sketch width (>> hidden sizes we target)
constexpr uint32_t kDense = 4;         // entropy, top-1 mass, tail mass, top-1 margin

// SplitMix64 finaliser: the sketch's fixed hash (part of the feature definition, never change).
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace

TokenDistribution top_logprobs(std::span<const float> logits, int32_t k) {
  check(!logits.empty(), "top_logprobs: empty logits");
  const int32_t V = static_cast<int32_t>(logits.size());
  float mx = -INFINITY;
  for (float x : logits) mx = std::max(mx, x);
  check(std::isfinite(mx), "top_logprobs: logits are not finite");
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x - mx));
  const float lse = mx + static_cast<float>(std::log(sum));
  const int32_t n = (k <= 0 || k >= V) ? V : k;
  std::vector<int32_t> ids(static_cast<size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  auto better = [&](int32_t a, int32_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
           (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), better);
  TokenDistribution d;
  d.tokens.assign(ids.begin(), ids.begin() + n);
  d.logprobs.resize(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i)
    d.logprobs[static_cast<size_t>(i)] =
        logits[static_cast<size_t>(ids[static_cast<size_t>(i)])] - lse;
  return d;
}

PepiFeatureSpec parse_pepi_features(std::string_view s) {
  PepiFeatureSpec spec;
  std::string_view head = s.substr(0, s.find(','));
  for (size_t at = head.size(); at < s.size();) {
    const size_t next = std::min(s.find(',', at + 1), s.size());
    const std::string_view tail = s.substr(at + 1, next - at - 1);
    if (tail == "ctx")
      spec.context = true;
    else if (tail == "ctx3")
      spec.context = spec.context3 = true;
    else if (tail == "bigram")
      spec.bigram = true;
    else if (tail == "emb")
      spec.embed = true;
    else
      throw Error("features '" + std::string(s) + "': unknown suffix '" + std::string(tail) +
                  "' (expected ,ctx ,ctx3 ,bigram or ,emb)");
    at = next;
  }
  if (head == "full") {
    spec.full = true;
    spec.k = 0;
    return spec;
  }
  int32_t k = 0;
  const bool ok = head.starts_with("topk:") &&
                  std::from_chars(head.data() + 5, head.data() + head.size(), k).ptr ==
                      head.data() + head.size() &&
                  head.size() > 5;
  check(ok && k > 0,
        "features '" + std::string(s) +
            "': expected topk:K (K > 0) or full, optionally followed by ,ctx ,ctx3 ,bigram");
  spec.k = k;
  return spec;
}

std::string pepi_features_name(const PepiFeatureSpec& s) {
  std::string n = s.full ? "full" : "topk:" + std::to_string(s.k);
  if (s.context3)
    n += ",ctx3";
  else if (s.context)
    n += ",ctx";
  if (s.bigram) n += ",bigram";
  if (s.embed) n += ",emb";
  return n;
}

void PepiDataset::append(const PepiDataset& o) {
  const int64_t base = offsets.back();
  index.insert(index.end(), o.index.begin(), o.index.end());
  value.insert(value.end(), o.value.begin(), o.value.end());
  for (size_t r = 1; r < o.offsets.size(); ++r) offsets.push_back(base + o.offsets[r]);
  expert.insert(expert.end(), o.expert.begin(), o.expert.end());
  confidence.insert(confidence.end(), o.confidence.begin(), o.confidence.end());
}

PepiFeaturizer::PepiFeaturizer(PepiFeatureSpec spec, int32_t vocab_size,
                               std::vector<float> token_table)
    : spec_(spec), vocab_(vocab_size) {
  check(vocab_size >= 2, "PEPI features: vocabulary size must be at least 2");
  check(spec.full || spec.k > 0, "PEPI features: top-k needs k > 0");
  const uint32_t V = static_cast<uint32_t>(vocab_size);
  // Layout: [distribution part][dense][context: p, p-1, p-2][bigram buckets]. Version-1 oracles
  // ("...,ctx") keep their layout: the later blocks are only appended.
  if (spec_.context3) spec_.context = true;
  const uint32_t dist = spec.full ? kSketchDim : 2 * V;
  dense_base_ = dist;
  ctx_base_ = dist + kDense;
  emb_base_ = ctx_base_ + (spec_.context3 ? 3 * V : spec_.context ? 2 * V : 0);
  if (spec_.embed) {
    check(!token_table.empty() && token_table.size() % V == 0 && token_table.size() / V <= 256,
          "PEPI features ',emb': need a token table of " + std::to_string(V) + " rows, got " +
              std::to_string(token_table.size()) + " values");
    for (float x : token_table)
      check(std::isfinite(x), "PEPI features ',emb': non-finite token table");
    table_ = std::move(token_table);
    width_ = static_cast<uint32_t>(table_.size() / V);
  }
  // Table rows of tokens p, p-1, p-2, of the top-1 token and the top-k probability-weighted mean.
  bigram_base_ = emb_base_ + 5 * width_;
  dim_ = bigram_base_ + (spec_.bigram ? kPepiBigramBuckets : 0);
}

void PepiFeaturizer::add_row(const TokenDistribution& d, int32_t token, int32_t prev,
                             PepiDataset& out) const {
  std::vector<int32_t> h;
  if (prev >= 0 || token >= 0) h.push_back(prev);
  if (token >= 0) h.push_back(token);
  add_row(d, h, out);
}

void PepiFeaturizer::add_row(const TokenDistribution& d, std::span<const int32_t> history,
                             PepiDataset& out) const {
  check(d.tokens.size() == d.logprobs.size() && !d.tokens.empty(),
        "PEPI features: a distribution needs as many log-probs as tokens (and at least one)");
  const size_t n = d.tokens.size();
  for (size_t i = 0; i < n; ++i) {
    const int32_t t = d.tokens[i];
    if (t < 0 || t >= vocab_)
      throw Error("PEPI features: token " + std::to_string(t) + " outside the vocabulary of " +
                  std::to_string(vocab_));
    if (!(d.logprobs[i] <= 1e-3f))
      throw Error("PEPI features: log-probability " + std::to_string(d.logprobs[i]) + " of token " +
                  std::to_string(t) + " is not a log-probability");
  }
  // APIs write -inf (or -9999) for impossible tokens: floor them so every feature stays finite.
  std::vector<float> lps(d.logprobs);
  for (float& x : lps) x = std::max(x, -100.0f);
  // Sorted order when a source did not sort (APIs return dicts).
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lps[a] > lps[b]; });
  const size_t used = spec_.full ? n : std::min(n, static_cast<size_t>(spec_.k));
  const float top = lps[order[0]];
  const float last = lps[order[used - 1]];
  double mass = 0, ent = 0;
  for (size_t j = 0; j < used; ++j) {
    const double lp = lps[order[j]], p = std::exp(lp);
    mass += p;
    ent -= p * lp;
  }
  const double tail = std::max(0.0, 1.0 - mass);
  // The tail's entropy is unknown: bound it as spread evenly below the last seen log-prob.
  if (tail > 1e-9) ent -= tail * std::min<double>(last, std::log(tail));

  auto push = [&](uint32_t i, float v) {
    out.index.push_back(i);
    out.value.push_back(v);
  };
  if (spec_.full) {
    double mean = 0;
    for (size_t i = 0; i < n; ++i) mean += lps[i];
    mean /= static_cast<double>(n);
    std::vector<float> sk(kSketchDim, 0.0f);
    for (size_t i = 0; i < n; ++i) {
      const uint64_t h = mix(static_cast<uint64_t>(d.tokens[i]));
      const float x = static_cast<float>(lps[i] - mean) * 0.05f;
      sk[h % kSketchDim] += (h >> 63) ? x : -x;
      sk[(h >> 20) % kSketchDim] += ((h >> 62) & 1) ? x : -x;
    }
    for (uint32_t j = 0; j < kSketchDim; ++j) push(j, sk[j]);
  } else {
    const uint32_t V = static_cast<uint32_t>(vocab_);
    for (size_t j = 0; j < used; ++j) {
      const uint32_t t = static_cast<uint32_t>(d.tokens[order[j]]);
      const float lp = lps[order[j]];
      push(t, std::exp(lp));                                            // probability
      push(V + t, std::clamp((lp - last) / 8.0f + 0.25f, 0.0f, 4.0f));  // rank-like presence
    }
  }
  push(dense_base_ + 0, static_cast<float>(ent / 5.0));
  push(dense_base_ + 1, std::exp(top));
  push(dense_base_ + 2, static_cast<float>(tail));
  push(dense_base_ + 3, used > 1 ? std::min(1.0f, (top - lps[order[1]]) / 8.0f) : 1.0f);
  // back(i) = token p - i, or -1 before the start (or outside V: an id the model cannot have).
  auto back = [&](size_t i) -> int32_t {
    if (i >= history.size()) return -1;
    const int32_t t = history[history.size() - 1 - i];
    return t >= 0 && t < vocab_ ? t : -1;
  };
  const uint32_t V = static_cast<uint32_t>(vocab_);
  const size_t depth = spec_.context3 ? 3 : spec_.context ? 2 : 0;
  for (size_t i = 0; i < depth; ++i)
    if (const int32_t t = back(i); t >= 0)
      push(ctx_base_ + static_cast<uint32_t>(i) * V + static_cast<uint32_t>(t), 1.0f);
  if (spec_.embed) {
    auto row = [&](int32_t t) {
      return std::span(table_).subspan(static_cast<size_t>(t) * width_, width_);
    };
    for (uint32_t i = 0; i < 3; ++i)
      if (const int32_t t = back(i); t >= 0) {
        const auto r = row(t);
        for (uint32_t c = 0; c < width_; ++c) push(emb_base_ + i * width_ + c, r[c]);
      }
    const auto top1 = row(d.tokens[order[0]]);
    for (uint32_t c = 0; c < width_; ++c) push(emb_base_ + 3 * width_ + c, top1[c]);
    std::vector<double> mean(width_, 0.0);
    for (size_t j = 0; j < used; ++j) {
      const double p = std::exp(static_cast<double>(lps[order[j]])) / std::max(mass, 1e-12);
      const auto r = row(d.tokens[order[j]]);
      for (uint32_t c = 0; c < width_; ++c) mean[c] += p * r[c];
    }
    for (uint32_t c = 0; c < width_; ++c)
      push(emb_base_ + 4 * width_ + c, static_cast<float>(mean[c]));
  }
  if (spec_.bigram && back(0) >= 0) {
    const uint64_t h =
        mix((static_cast<uint64_t>(back(1) + 1) << 32) | static_cast<uint64_t>(back(0)));
    push(bigram_base_ + static_cast<uint32_t>(h % kPepiBigramBuckets), 1.0f);
  }
  out.offsets.push_back(static_cast<int64_t>(out.index.size()));
}

}  // namespace epwa
