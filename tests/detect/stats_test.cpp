#include <gtest/gtest.h>

#include <cmath>

#include "epwa/detect.hpp"

namespace {

double log10_sf(int64_t g, int64_t n, double p) {
  return epwa::binomial_log_sf(g, n, p) / std::log(10.0);
}

TEST(BinomialTail, MatchesExactValues) {
  // Exact values from Python's fractions (sum of comb(n, k) p^k q^(n-k), k >= g).
  struct Case {
    int64_t g, n;
    double p, exact;
  };
  for (const Case& c :
       {Case{8, 10, 0.5, 0.0546875}, Case{60, 100, 0.5, 0.028443966820490395},
        Case{45, 100, 0.5, 0.8643734879630827}, Case{70, 200, 0.25, 0.0010278447277140873},
        Case{600, 1000, 0.5, 1.3642320780330092e-10}, Case{10, 10, 0.5, 0.0009765625},
        Case{150, 200, 0.5, 4.1965104378023807e-13}}) {
    const double got = std::exp(epwa::binomial_log_sf(c.g, c.n, c.p));
    EXPECT_NEAR(got / c.exact, 1.0, 1e-9) << c.g << "/" << c.n;
  }
  EXPECT_EQ(epwa::binomial_log_sf(0, 50, 0.5), 0.0);
  EXPECT_EQ(epwa::binomial_log_sf(-3, 50, 0.5), 0.0);
  EXPECT_TRUE(std::isinf(epwa::binomial_log_sf(51, 50, 0.5)));
  EXPECT_NEAR(std::exp(epwa::binomial_log_sf(1, 1, 0.25)), 0.25, 1e-15);
}

TEST(BinomialTail, StableForAMillionTrials) {
  // log10 P[X >= g], X ~ B(1e6, 1/2), from exact big-integer sums in Python.
  EXPECT_NEAR(log10_sf(501000, 1000000, 0.5), -1.6419861122849397, 1e-6);
  EXPECT_NEAR(log10_sf(505000, 1000000, 0.5), -23.11402975168312, 1e-6);
  EXPECT_NEAR(log10_sf(500000, 1000000, 0.5), -0.30068361706798896, 1e-6);
  EXPECT_NEAR(log10_sf(499000, 1000000, 0.5), -0.0099703983287327, 1e-6);
  // Far beyond double range: still finite and ordered.
  const double far = epwa::binomial_log_sf(700000, 1000000, 0.5);
  EXPECT_TRUE(std::isfinite(far));
  EXPECT_LT(far, -10000.0);
  EXPECT_LT(epwa::binomial_log_sf(700001, 1000000, 0.5), far);
}

TEST(Statistics, ZScoreAndNormalTail) {
  EXPECT_DOUBLE_EQ(epwa::z_score(60, 100, 0.5), 2.0);
  EXPECT_DOUBLE_EQ(epwa::z_score(0, 0, 0.5), 0.0);
  EXPECT_NEAR(epwa::z_score(40, 100, 0.25), 15.0 / std::sqrt(18.75), 1e-12);
  EXPECT_NEAR(std::exp(epwa::normal_log_sf(0.0)), 0.5, 1e-15);
  EXPECT_NEAR(std::exp(epwa::normal_log_sf(4.0)), 3.167124183311992e-05, 1e-15);
  // Continuity where the asymptotic series takes over, and monotone beyond.
  EXPECT_NEAR(epwa::normal_log_sf(29.999999), epwa::normal_log_sf(30.0), 1e-4);
  EXPECT_NEAR(epwa::normal_log_sf(40.0), -804.6084420137538, 1e-9);
  EXPECT_NEAR(epwa::normal_log_sf(30.0), -454.32124395634315, 1e-9);
}

}  // namespace
