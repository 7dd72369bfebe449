// Detection and quality metrics of the evaluation.
#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/eval.hpp"

namespace epwa::eval {

uint64_t Rng::next() {
  uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rng::below(uint64_t n) {
  check(n > 0, "Rng::below: empty range");
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % n + 1) % n;  // accept r <= limit
  uint64_t r;
  do r = next();
  while (r > limit);
  return r % n;
}

double Rng::uniform() {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

double roc_auc(std::span<const double> pos, std::span<const double> neg) {
  check(!pos.empty() && !neg.empty(), "roc_auc: needs at least one positive and one negative");
  // Rank-sum over the merged, sorted scores; tied groups get their average rank.
  std::vector<std::pair<double, bool>> all;
  all.reserve(pos.size() + neg.size());
  for (double x : pos) all.emplace_back(x, true);
  for (double x : neg) all.emplace_back(x, false);
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first < b.first; });
  double rank_sum = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    size_t npos = 0;
    while (j < all.size() && all[j].first == all[i].first) npos += all[j++].second;
    const double avg_rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2.0;
    rank_sum += avg_rank * static_cast<double>(npos);
    i = j;
  }
  const double p = static_cast<double>(pos.size()), n = static_cast<double>(neg.size());
  return (rank_sum - p * (p + 1) / 2.0) / (p * n);
}

std::vector<RocPoint> roc_curve(std::span<const double> pos, std::span<const double> neg) {
  std::vector<double> t(pos.begin(), pos.end());
  t.insert(t.end(), neg.begin(), neg.end());
  std::sort(t.begin(), t.end(), std::greater<>());
  t.erase(std::unique(t.begin(), t.end()), t.end());
  std::vector<RocPoint> out;
  out.push_back({std::numeric_limits<double>::infinity(), 0.0, 0.0});
  for (double x : t) {  // detected = score >= x here, i.e. > the next lower distinct score
    auto at_least = [x](std::span<const double> v) {
      if (v.empty()) return 0.0;
      return static_cast<double>(
                 std::count_if(v.begin(), v.end(), [x](double s) { return s >= x; })) /
             static_cast<double>(v.size());
    };
    out.push_back({x, at_least(neg), at_least(pos)});
  }
  if (out.back().fpr != 1.0 || out.back().tpr != 1.0)
    out.push_back({-std::numeric_limits<double>::infinity(), 1.0, 1.0});
  return out;
}

double rate_above(std::span<const double> scores, double threshold) {
  if (scores.empty()) return 0.0;
  const auto k =
      std::count_if(scores.begin(), scores.end(), [&](double s) { return s > threshold; });
  return static_cast<double>(k) / static_cast<double>(scores.size());
}

double threshold_at_fpr(std::span<const double> neg, double fpr) {
  check(!neg.empty(), "threshold_at_fpr: no negatives");
  check(fpr >= 0 && fpr <= 1, "threshold_at_fpr: fpr outside [0, 1]");
  std::vector<double> s(neg.begin(), neg.end());
  std::sort(s.begin(), s.end(), std::greater<>());
  const size_t allowed =
      static_cast<size_t>(std::floor(fpr * static_cast<double>(s.size()) + 1e-9));
  if (allowed >= s.size()) return -std::numeric_limits<double>::infinity();
  // Scores above s[allowed] are exactly those ranked before it (ties with it are not above).
  return s[allowed];
}

double tpr_at_fpr(std::span<const double> pos, std::span<const double> neg, double fpr) {
  return rate_above(pos, threshold_at_fpr(neg, fpr));
}

double mean(std::span<const double> v) {
  if (v.empty()) return 0.0;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

double median(std::span<const double> v) {
  if (v.empty()) return 0.0;
  std::vector<double> s(v.begin(), v.end());
  std::sort(s.begin(), s.end());
  const size_t m = s.size() / 2;
  return s.size() % 2 ? s[m] : (s[m - 1] + s[m]) / 2.0;
}

namespace {
Interval percentile_interval(std::vector<double> stats, double level) {
  check(!stats.empty(), "bootstrap: resamples must be > 0");
  check(level > 0 && level < 1, "bootstrap: level outside (0, 1)");
  std::sort(stats.begin(), stats.end());
  auto at = [&](double q) {  // nearest-rank percentile
    const double idx = q * static_cast<double>(stats.size() - 1);
    return stats[static_cast<size_t>(std::llround(idx))];
  };
  const double a = (1.0 - level) / 2.0;
  return {at(a), at(1.0 - a)};
}

void resample(std::span<const double> v, Rng& rng, std::vector<double>& out) {
  out.resize(v.size());
  for (auto& x : out) x = v[rng.below(v.size())];
}
}  // namespace

Interval bootstrap_ci(std::span<const double> v,
                      const std::function<double(std::span<const double>)>& stat, int32_t resamples,
                      uint64_t seed, double level) {
  check(!v.empty(), "bootstrap_ci: empty sample");
  check(resamples > 0, "bootstrap_ci: resamples must be > 0");
  Rng rng(seed);
  std::vector<double> stats, buf;
  stats.reserve(resamples);
  for (int32_t b = 0; b < resamples; ++b) {
    resample(v, rng, buf);
    stats.push_back(stat(buf));
  }
  return percentile_interval(std::move(stats), level);
}

Interval bootstrap_ci2(
    std::span<const double> pos, std::span<const double> neg,
    const std::function<double(std::span<const double>, std::span<const double>)>& stat,
    int32_t resamples, uint64_t seed, double level) {
  check(!pos.empty() && !neg.empty(), "bootstrap_ci2: empty sample");
  check(resamples > 0, "bootstrap_ci2: resamples must be > 0");
  Rng rng(seed);
  std::vector<double> stats, bp, bn;
  stats.reserve(resamples);
  for (int32_t b = 0; b < resamples; ++b) {
    resample(pos, rng, bp);
    resample(neg, rng, bn);
    stats.push_back(stat(bp, bn));
  }
  return percentile_interval(std::move(stats), level);
}

double distinct_n(std::span<const int32_t> tokens, int32_t n) {
  check(n >= 1, "distinct_n: n must be >= 1");
  if (tokens.size() < static_cast<size_t>(n)) return 0.0;
  std::set<std::vector<int32_t>> seen;
  const size_t total = tokens.size() - static_cast<size_t>(n) + 1;
  for (size_t i = 0; i < total; ++i) seen.emplace(tokens.begin() + i, tokens.begin() + i + n);
  return static_cast<double>(seen.size()) / static_cast<double>(total);
}

double perplexity_from_nll(std::span<const double> nll) {
  check(!nll.empty(), "perplexity: no tokens");
  return std::exp(mean(nll));
}

}  // namespace epwa::eval
