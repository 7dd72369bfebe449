// Metric code against hand-computed cases.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/eval.hpp"

using namespace epwa::eval;

TEST(Metrics, AucCountsTiesAsHalf) {
  // pairs (3,1) (3,2) (2,1) win, (2,2) ties: 3.5 / 4
  EXPECT_DOUBLE_EQ(roc_auc(std::vector<double>{3, 2}, std::vector<double>{1, 2}), 0.875);
  EXPECT_DOUBLE_EQ(roc_auc(std::vector<double>{5, 6}, std::vector<double>{1, 2, 3}), 1.0);
  EXPECT_DOUBLE_EQ(roc_auc(std::vector<double>{0}, std::vector<double>{1, 2}), 0.0);
  EXPECT_DOUBLE_EQ(roc_auc(std::vector<double>{1, 1}, std::vector<double>{1, 1, 1}), 0.5);
  // pos {1, 4}, neg {2, 3}: 1 loses twice, 4 wins twice -> 0.5
  EXPECT_DOUBLE_EQ(roc_auc(std::vector<double>{1, 4}, std::vector<double>{2, 3}), 0.5);
  EXPECT_THROW(roc_auc(std::vector<double>{}, std::vector<double>{1}), epwa::Error);
}

TEST(Metrics, RocCurvePoints) {
  const auto c = roc_curve(std::vector<double>{3, 1}, std::vector<double>{2});
  ASSERT_EQ(c.size(), 4u);  // start, 3, 2, 1
  EXPECT_DOUBLE_EQ(c[1].tpr, 0.5);
  EXPECT_DOUBLE_EQ(c[1].fpr, 0.0);
  EXPECT_DOUBLE_EQ(c[2].tpr, 0.5);
  EXPECT_DOUBLE_EQ(c[2].fpr, 1.0);
  EXPECT_DOUBLE_EQ(c[3].tpr, 1.0);
  EXPECT_DOUBLE_EQ(c[3].fpr, 1.0);
}

TEST(Metrics, RateAboveIsStrict) {
  const std::vector<double> z{4.0, 4.1, 3.9};
  EXPECT_DOUBLE_EQ(rate_above(z, 4.0), 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(rate_above(std::vector<double>{}, 4.0), 0.0);
}

TEST(Metrics, ThresholdsFromNegatives) {
  std::vector<double> neg;
  for (int i = 0; i < 100; ++i) neg.push_back(i);
  // 1% of 100 negatives: one may be above -> threshold 98 (only 99 is above)
  EXPECT_DOUBLE_EQ(threshold_at_fpr(neg, 0.01), 98.0);
  EXPECT_DOUBLE_EQ(rate_above(neg, threshold_at_fpr(neg, 0.01)), 0.01);
  // 0.1% of 100: none may be above -> the maximum
  EXPECT_DOUBLE_EQ(threshold_at_fpr(neg, 0.001), 99.0);
  const std::vector<double> pos{98, 98.5, 99.5, 50};
  EXPECT_DOUBLE_EQ(tpr_at_fpr(pos, neg, 0.01), 0.5);
  EXPECT_DOUBLE_EQ(tpr_at_fpr(pos, neg, 0.001), 0.25);
  // Ties among the top negatives: the threshold may not split them, so the FPR stays <= target.
  const std::vector<double> tied{5, 5, 5, 1};
  EXPECT_DOUBLE_EQ(threshold_at_fpr(tied, 0.5), 5.0);
  EXPECT_DOUBLE_EQ(rate_above(tied, 5.0), 0.0);
  EXPECT_EQ(threshold_at_fpr(tied, 1.0), -std::numeric_limits<double>::infinity());
  EXPECT_THROW(threshold_at_fpr(std::vector<double>{}, 0.01), epwa::Error);
}

TEST(Metrics, MeanMedian) {
  EXPECT_DOUBLE_EQ(mean(std::vector<double>{1, 2, 6}), 3.0);
  EXPECT_DOUBLE_EQ(median(std::vector<double>{3, 1, 2}), 2.0);
  EXPECT_DOUBLE_EQ(median(std::vector<double>{4, 1, 3, 2}), 2.5);
}

TEST(Metrics, RngIsSplitMix64) {
  Rng r(0);
  EXPECT_EQ(r.next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(r.next(), 0x6e789e6aa1b965f4ULL);
  Rng b(7);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(b.below(3), 3u);
}

TEST(Metrics, BootstrapSeededAndSensible) {
  auto m = [](std::span<const double> v) { return mean(v); };
  // one value: every resample is that value
  const auto one = bootstrap_ci(std::vector<double>{2.5}, m, 200, 1);
  EXPECT_DOUBLE_EQ(one.lo, 2.5);
  EXPECT_DOUBLE_EQ(one.hi, 2.5);
  // 50 zeros and 50 ones: mean 0.5, standard error 0.05 -> about [0.40, 0.60]
  std::vector<double> v(100, 0.0);
  for (int i = 0; i < 50; ++i) v[i] = 1.0;
  const auto ci = bootstrap_ci(v, m, 2000, 42);
  EXPECT_NEAR(ci.lo, 0.40, 0.025);
  EXPECT_NEAR(ci.hi, 0.60, 0.025);
  const auto again = bootstrap_ci(v, m, 2000, 42);
  EXPECT_EQ(ci.lo, again.lo);
  EXPECT_EQ(ci.hi, again.hi);
  // two-sample: separated scores keep AUC 1 in every resample
  auto auc = [](std::span<const double> p, std::span<const double> n) { return roc_auc(p, n); };
  const auto a =
      bootstrap_ci2(std::vector<double>{5, 6, 7}, std::vector<double>{1, 2}, auc, 300, 3);
  EXPECT_DOUBLE_EQ(a.lo, 1.0);
  EXPECT_DOUBLE_EQ(a.hi, 1.0);
  const auto b =
      bootstrap_ci2(std::vector<double>{1, 4, 6}, std::vector<double>{2, 3, 5}, auc, 500, 3);
  EXPECT_LT(b.lo, b.hi);
  EXPECT_THROW(bootstrap_ci(std::vector<double>{}, m, 10, 1), epwa::Error);
}

TEST(Metrics, DistinctN) {
  const std::vector<int32_t> t{1, 2, 1, 2, 1};
  EXPECT_DOUBLE_EQ(distinct_n(t, 1), 2.0 / 5.0);
  EXPECT_DOUBLE_EQ(distinct_n(t, 2), 2.0 / 4.0);
  EXPECT_DOUBLE_EQ(distinct_n(t, 3), 2.0 / 3.0);  // (1,2,1) (2,1,2)
  EXPECT_DOUBLE_EQ(distinct_n(t, 6), 0.0);
  EXPECT_DOUBLE_EQ(distinct_n(std::vector<int32_t>{1, 2, 3}, 2), 1.0);
}

TEST(Metrics, Perplexity) {
  EXPECT_NEAR(perplexity_from_nll(std::vector<double>{std::log(2.0), std::log(8.0)}), 4.0, 1e-12);
  EXPECT_THROW(perplexity_from_nll(std::vector<double>{}), epwa::Error);
}
