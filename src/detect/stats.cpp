// The test statistics: z-score, exact binomial upper tail in log space, normal upper tail.
#include <cmath>
#include <limits>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"

namespace epwa {

double z_score(int64_t g, int64_t n, double gamma) {
  if (n <= 0) return 0.0;
  const double nn = static_cast<double>(n);
  return (static_cast<double>(g) - gamma * nn) / std::sqrt(nn * gamma * (1.0 - gamma));
}

namespace {

double log_pmf(int64_t k, int64_t n, double p) {
  const double kk = static_cast<double>(k), nn = static_cast<double>(n);
  return std::lgamma(nn + 1.0) - std::lgamma(kk + 1.0) - std::lgamma(nn - kk + 1.0) +
         kk * std::log(p) + (nn - kk) * std::log1p(-p);
}

}  // namespace

double binomial_log_sf(int64_t g, int64_t n, double p) {
  check(n >= 0 && p > 0.0 && p < 1.0, "binomial tail: need n >= 0 and 0 < p < 1");
  if (g <= 0) return 0.0;
  if (g > n) return -std::numeric_limits<double>::infinity();
  const double q = 1.0 - p, odds = p / q;
  const auto mode = static_cast<int64_t>(std::floor(static_cast<double>(n + 1) * p));
  // Sum relative to the largest term of the tail, where successive terms only shrink, and stop once
  // they no longer change the sum.
  if (g > mode) {  // upper tail: pmf(k+1)/pmf(k) = (n-k)/(k+1) * p/q < 1 here
    double term = 1.0, sum = 1.0;
    for (int64_t k = g; k < n; ++k) {
      term *= static_cast<double>(n - k) / static_cast<double>(k + 1) * odds;
      sum += term;
      if (term < sum * 1e-17) break;
    }
    return log_pmf(g, n, p) + std::log(sum);
  }
  // g <= mode: P[X >= g] = 1 - P[X <= g-1]; pmf(k-1)/pmf(k) = k/(n-k+1) * q/p < 1 for k <= g-1.
  double term = 1.0, sum = 1.0;
  for (int64_t k = g - 1; k > 0; --k) {
    term *= static_cast<double>(k) / static_cast<double>(n - k + 1) / odds;
    sum += term;
    if (term < sum * 1e-17) break;
  }
  const double log_lower = log_pmf(g - 1, n, p) + std::log(sum);
  return std::log1p(-std::exp(std::min(log_lower, 0.0)));
}

double gamma_log_sf(int64_t n, double s) {
  check(n >= 1, "gamma tail: need n >= 1");
  if (s <= 0) return 0.0;
  // e^-s sum_{k<n} s^k / k!, the terms summed relative to the largest (log-sum-exp).
  const double ls = std::log(s);
  double top = -std::numeric_limits<double>::infinity();
  for (int64_t k = 0; k < n; ++k)
    top = std::max(top, static_cast<double>(k) * ls - std::lgamma(static_cast<double>(k) + 1));
  double sum = 0;
  for (int64_t k = 0; k < n; ++k)
    sum += std::exp(static_cast<double>(k) * ls - std::lgamma(static_cast<double>(k) + 1) - top);
  return std::min(0.0, -s + top + std::log(sum));
}

double normal_isf_log(double log_p) {
  check(log_p <= 0, "normal quantile: log p must be <= 0");
  // normal_log_sf decreases in z: bisect (to far below double's resolution of z).
  double lo = -40, hi = 40;
  while (normal_log_sf(hi) > log_p) hi *= 2;
  for (int i = 0; i < 200 && hi - lo > 1e-12 * std::max(1.0, std::fabs(hi)); ++i) {
    const double mid = 0.5 * (lo + hi);
    (normal_log_sf(mid) > log_p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

double normal_log_sf(double z) {
  if (z < 30.0) return std::log(0.5 * std::erfc(z / std::sqrt(2.0)));
  // Asymptotic series of the Mills ratio; its error is far below double precision at z >= 30.
  const double z2 = z * z;
  return -0.5 * z2 - std::log(z) - 0.5 * std::log(2.0 * M_PI) +
         std::log1p(-1.0 / z2 + 3.0 / (z2 * z2) - 15.0 / (z2 * z2 * z2));
}

}  // namespace epwa
