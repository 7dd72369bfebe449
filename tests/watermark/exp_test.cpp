// EXP-v1 (docs/SPEC.md 11): the keyed race draws from the sampler's own distribution, the keyed
// uniforms are uniform and keyed, and the Gamma tail that gives exact p-values.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"
#include "epwa/generate.hpp"
#include "epwa/watermark.hpp"

namespace {

const std::string kHash(64, 'a');

struct Seeded : epwa::KeyedUniforms {
  uint64_t seed = 0;
  double uniform(int32_t token) const override {
    return epwa::GreenLists::exp_uniform(seed, token);
  }
};

TEST(ExpSampling, TheKeyedRaceDrawsFromTheSamplersDistribution) {
  // Temperature 0.7 and top-k 5: token 5 (the lowest logit) is never a candidate.
  const std::vector<float> logits = {1.0f, 2.5f, 0.3f, 2.4f, -0.5f, -3.0f};
  epwa::SamplingOptions so;
  so.temperature = 0.7f;
  so.top_k = 5;
  std::vector<double> p(6, 0.0);
  double z = 0;
  for (int v = 0; v < 5; ++v) z += p[static_cast<size_t>(v)] = std::exp(logits[v] / 0.7);
  for (double& x : p) x /= z;
  constexpr int kDraws = 40000;
  std::vector<int> count(6, 0);
  epwa::Sampler sampler(so);
  Seeded u;
  for (int i = 0; i < kDraws; ++i) {
    u.seed = 0x1234567ull * static_cast<uint64_t>(i + 1);
    std::vector<float> row = logits;
    ++count[static_cast<size_t>(sampler.sample(row, &u))];
  }
  EXPECT_EQ(count[5], 0);
  for (size_t v = 0; v < 5; ++v) {
    const double sd = std::sqrt(kDraws * p[v] * (1 - p[v]));
    EXPECT_NEAR(count[v], kDraws * p[v], 4.5 * sd) << "token " << v;
  }
  // The same uniforms give the same token (the draw is the key's, not the sampler's seed).
  epwa::SamplingOptions other = so;
  other.seed = 99;
  epwa::Sampler a(so), b(other);
  u.seed = 42;
  std::vector<float> r1 = logits, r2 = logits;
  EXPECT_EQ(a.sample(r1, &u), b.sample(r2, &u));
}

TEST(ExpSampling, UniformsAreUniformAndKeyedByKeyHashExpertAndPreviousToken) {
  double sum = 0, lo = 1, hi = 0;
  int below_tenth = 0;
  constexpr int kN = 200000;
  for (int i = 0; i < kN; ++i) {
    const double r = epwa::GreenLists::exp_uniform(static_cast<uint64_t>(i / 100), i % 100);
    sum += r;
    lo = std::min(lo, r);
    hi = std::max(hi, r);
    below_tenth += r < 0.1;
  }
  EXPECT_GT(lo, 0.0);
  EXPECT_LT(hi, 1.0);
  EXPECT_NEAR(sum / kN, 0.5, 0.003);
  EXPECT_NEAR(below_tenth / double(kN), 0.1, 0.003);
  const epwa::GreenLists a("key-a", kHash, 100, 0.5, 8), b("key-b", kHash, 100, 0.5, 8),
      c("key-a", std::string(64, 'b'), 100, 0.5, 8);
  EXPECT_EQ(a.exp_seed(3, 17), a.exp_seed(3, 17));
  EXPECT_NE(a.exp_seed(3, 17), b.exp_seed(3, 17));
  EXPECT_NE(a.exp_seed(3, 17), c.exp_seed(3, 17));
  EXPECT_NE(a.exp_seed(3, 17), a.exp_seed(4, 17));
  EXPECT_NE(a.exp_seed(3, 17), a.exp_seed(3, 18));
  EXPECT_THROW(a.exp_seed(8, 0), epwa::Error);
  EXPECT_THROW(a.exp_seed(0, 100), epwa::Error);
}

TEST(ExpDetection, GammaTailMatchesExactValues) {
  // P[Gamma(n, 1) >= s] = e^-s sum_{k<n} s^k / k!, from 60-digit decimal sums in Python.
  struct Case {
    int64_t n;
    double s, exact;
  };
  for (const Case& c :
       {Case{1, 3.0, 0.049787068367863944}, Case{2, 1.5, 0.55782540037107453},
        Case{10, 20.0, 0.0049954123083075872}, Case{50, 50.0, 0.48119168452795674},
        Case{200, 300.0, 3.3711032555258843e-10}, Case{100, 60.0, 0.99999851847236731}})
    EXPECT_NEAR(std::exp(epwa::gamma_log_sf(c.n, c.s)) / c.exact, 1.0, 1e-12) << c.n << " " << c.s;
  EXPECT_EQ(epwa::gamma_log_sf(5, 0.0), 0.0);
  const double far = epwa::gamma_log_sf(100, 5000.0);  // far below double's range: finite
  EXPECT_TRUE(std::isfinite(far));
  EXPECT_LT(far, -4000.0);
}

// Text written without the key: p-values are uniform (the level holds) whatever the records say.
TEST(ExpDetection, UnkeyedTextHasUniformPValues) {
  auto lists = std::make_shared<epwa::GreenLists>("exp-null-key", kHash, 1000, 0.5, 8);
  epwa::DetectOptions o;
  o.scheme = epwa::DetectScheme::Exp;
  const epwa::Detector det(lists, o);
  std::mt19937_64 rng(7);
  constexpr int kTexts = 2000;
  int below5 = 0, below1 = 0, detected = 0;
  for (int i = 0; i < kTexts; ++i) {
    std::vector<int32_t> tokens(61);
    std::vector<epwa::RouterRecord> records(60);
    for (auto& t : tokens) t = static_cast<int32_t>(rng() % 1000);
    for (auto& r : records) r = {static_cast<int32_t>(rng() % 8), 0.5f};
    epwa::DetectionInput in;
    in.tokens = tokens;
    in.prompt_tokens = 1;
    in.records = records;
    const auto r = det.detect(in);
    ASSERT_EQ(r.scheme, "exp");
    below5 += r.p_value < 0.05;
    below1 += r.p_value < 0.01;
    detected += r.detected;
  }
  // Binomial(2000, 0.05): sd 9.7; (2000, 0.01): sd 4.4.
  EXPECT_NEAR(below5, 100, 40);
  EXPECT_NEAR(below1, 20, 18);
  EXPECT_EQ(detected, 0);
}

TEST(ExpDetection, RefusesMethodsAndOptionsItCannotScore) {
  auto lists = std::make_shared<epwa::GreenLists>("k", kHash, 100, 0.5, 8);
  epwa::DetectOptions o;
  o.scheme = epwa::DetectScheme::Exp;
  o.method = epwa::DetectMethod::Weighted;
  EXPECT_THROW(epwa::Detector(lists, o), epwa::Error);
  o.method = epwa::DetectMethod::Full;
  o.min_entropy = 1;
  EXPECT_THROW(epwa::Detector(lists, o), epwa::Error);
  epwa::WatermarkConfig wc;
  wc.mode = epwa::WatermarkMode::Exp;
  wc.min_entropy = 1;
  EXPECT_THROW(epwa::WatermarkProcessor(wc, lists), epwa::Error);
  EXPECT_EQ(epwa::watermark_mode_from_name("exp"), epwa::WatermarkMode::Exp);
  EXPECT_EQ(epwa::detect_scheme_from_name("exp"), epwa::DetectScheme::Exp);
}

}  // namespace

namespace {

TEST(ExpDetection, ZIsTheNormalQuantileOfTheExactPValue) {
  for (double z : {-3.0, 0.0, 1.5, 4.0, 12.0, 45.0, 300.0})
    EXPECT_NEAR(epwa::normal_isf_log(epwa::normal_log_sf(z)), z, 1e-8 * std::max(1.0, z)) << z;
  EXPECT_NEAR(epwa::normal_isf_log(std::log(0.5)), 0.0, 1e-12);
}

}  // namespace
