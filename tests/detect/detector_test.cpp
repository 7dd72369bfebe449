#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"
#include "simulate.hpp"

namespace {

const std::string kHash(64, 'd');
constexpr int32_t kV = 2000, kE = 4;

std::shared_ptr<const epwa::GreenLists> lists(double gamma = 0.5) {
  return std::make_shared<epwa::GreenLists>("detector-key", kHash, kV, gamma, kE);
}

// A sequence whose token t is green (or red) for the expert recorded at t-1, by construction.
struct Built {
  std::vector<int32_t> tokens;
  std::vector<epwa::RouterRecord> records;
};
Built build(const epwa::GreenLists& gl, const std::vector<bool>& green, int64_t prompt) {
  Built b;
  std::mt19937 rng(7);
  b.tokens.push_back(1);
  for (int64_t i = 1; i < prompt; ++i) b.tokens.push_back(static_cast<int32_t>(rng() % kV));
  for (size_t i = 0; i < b.tokens.size() + green.size(); ++i) {
    const int32_t e = static_cast<int32_t>(rng() % kE);
    b.records.push_back({e, 0.3f + 0.01f * static_cast<float>(i % 50)});
  }
  for (bool want : green) {
    const int32_t e = b.records[b.tokens.size() - 1].expert;
    int32_t t;
    do t = static_cast<int32_t>(rng() % kV);
    while (gl.is_green(e, t) != want);
    b.tokens.push_back(t);
  }
  return b;
}

TEST(Detector, CountsGreenAgainstThePreviousPositionsExpert) {
  auto gl = lists();
  std::vector<bool> green(40, true);
  for (int i = 0; i < 10; ++i) green[i * 4] = false;  // 30 green of 40
  const Built b = build(*gl, green, 5);
  epwa::DetectOptions o;
  o.count_repeats = true;
  epwa::Detector d(gl, o);
  const auto r = d.detect({b.tokens, 5, b.records});
  EXPECT_EQ(r.method, "full");
  EXPECT_EQ(r.n, 40);
  EXPECT_EQ(r.g, 30);
  EXPECT_NEAR(r.z, epwa::z_score(r.g, r.n, 0.5), 1e-12);
  EXPECT_NEAR(std::log10(r.p_value), r.log10_p, 1e-9);
  // Shifting the records by one position (the old off-by-one) destroys the signal.
  std::vector<epwa::RouterRecord> shifted(b.records.begin() + 1, b.records.end());
  shifted.push_back(shifted.back());
  const auto wrong = d.detect({b.tokens, 5, shifted});
  EXPECT_LT(wrong.g, r.g);
}

TEST(Detector, PromptIsContextOnly) {
  auto gl = lists();
  const Built b = build(*gl, std::vector<bool>(20, true), 30);
  epwa::DetectOptions o;
  o.count_repeats = true;
  epwa::Detector d(gl, o);
  const auto r = d.detect({b.tokens, 30, b.records});
  EXPECT_EQ(r.n, 20);
  EXPECT_EQ(r.g, 20);
  EXPECT_TRUE(r.detected);                              // z = 10 / sqrt(5) = 4.47
  const auto all = d.detect({b.tokens, 0, b.records});  // BOS is never scored
  EXPECT_EQ(all.n, 49);
  EXPECT_LT(all.z, r.z);
}

TEST(Detector, TooShort) {
  auto gl = lists();
  const Built b = build(*gl, std::vector<bool>(9, true), 3);
  epwa::DetectOptions o;
  o.count_repeats = true;
  const auto r = epwa::Detector(gl, o).detect({b.tokens, 3, b.records});
  EXPECT_EQ(r.n, 9);
  EXPECT_FALSE(r.detected);
  EXPECT_EQ(r.reason, "too short");
  const auto empty =
      epwa::Detector(gl).detect({b.tokens, static_cast<int64_t>(b.tokens.size()), {}});
  EXPECT_EQ(empty.n, 0);
  EXPECT_EQ(empty.reason, "too short");
}

TEST(Detector, RepeatedPairsAreScoredOnce) {
  auto gl = lists();
  // A repetitive text: the same green token under the same expert 50 times.
  int32_t tok = 0;
  while (!gl->is_green(2, tok)) ++tok;
  std::vector<int32_t> tokens(51, tok);
  tokens[0] = 1;
  std::vector<epwa::RouterRecord> rec(51, {2, 0.9f});
  const auto dedup = epwa::Detector(gl).detect({tokens, 1, rec});
  EXPECT_EQ(dedup.n, 1);
  EXPECT_EQ(dedup.repeats_skipped, 49);
  EXPECT_FALSE(dedup.detected);
  epwa::DetectOptions o;
  o.count_repeats = true;
  const auto rep = epwa::Detector(gl, o).detect({tokens, 1, rec});
  EXPECT_EQ(rep.n, 50);
  EXPECT_EQ(rep.g, 50);
  EXPECT_TRUE(rep.detected);
}

TEST(Detector, CspvStrata) {
  auto gl = lists();
  std::vector<bool> green(90);
  for (size_t i = 0; i < green.size(); ++i) green[i] = i % 3 != 0;
  const Built b = build(*gl, green, 4);
  epwa::DetectOptions o;
  o.method = epwa::DetectMethod::Cspv;
  o.sample = 31;
  o.count_repeats = true;
  o.tokens_detail = true;
  epwa::Detector d(gl, o);
  const auto r = d.detect({b.tokens, 4, b.records});
  EXPECT_EQ(r.method, "cspv");
  EXPECT_EQ(r.n, 31);
  ASSERT_EQ(r.strata.size(), 3u);
  EXPECT_EQ(r.strata[0].n, 10);
  EXPECT_EQ(r.strata[1].n, 10);
  EXPECT_EQ(r.strata[2].n, 11);
  EXPECT_EQ(r.strata[0].hits + r.strata[1].hits + r.strata[2].hits, r.g);
  // Every low-stratum token is at most as confident as every unsampled one, and high at least.
  float max_low = 0, min_high = 1, min_rest = 1, max_rest = 0;
  int64_t scored = 0;
  for (const auto& t : r.tokens) {
    scored += t.scored;
    if (t.stratum == "low") max_low = std::max(max_low, t.confidence);
    if (t.stratum == "high") min_high = std::min(min_high, t.confidence);
    if (!t.scored)
      min_rest = std::min(min_rest, t.confidence), max_rest = std::max(max_rest, t.confidence);
  }
  EXPECT_EQ(scored, 31);
  EXPECT_LE(max_low, min_rest);
  EXPECT_GE(min_high, max_rest);
  // Reproducible: same tokens, same sample.
  const auto again = d.detect({b.tokens, 4, b.records});
  EXPECT_EQ(again.g, r.g);
  for (size_t i = 0; i < r.tokens.size(); ++i)
    EXPECT_EQ(again.tokens[i].stratum, r.tokens[i].stratum);
  EXPECT_THROW(epwa::Detector(gl, {epwa::DetectMethod::Cspv}), epwa::Error);
  const auto j = epwa::to_json(r);
  EXPECT_EQ(j["strata"]["random"]["n"], 11);
  EXPECT_EQ(j["tokens"].size(), 90u);
}

TEST(Detector, WeightedStatistic) {
  auto gl = lists();
  std::vector<bool> green(30);
  for (size_t i = 0; i < green.size(); ++i) green[i] = i % 2 == 0;
  const Built b = build(*gl, green, 2);
  epwa::DetectOptions o;
  o.method = epwa::DetectMethod::Weighted;
  o.count_repeats = true;
  const auto r = epwa::Detector(gl, o).detect({b.tokens, 2, b.records});
  double num = 0, den = 0;
  for (size_t t = 2; t < b.tokens.size(); ++t) {
    const double w = b.records[t - 1].confidence;
    num += w * ((green[t - 2] ? 1.0 : 0.0) - 0.5);
    den += w * w;
  }
  EXPECT_NEAR(r.z, num / std::sqrt(0.25 * den), 1e-9);
  EXPECT_NEAR(r.plain_z, 0.0, 1e-12);  // 15 of 30
  EXPECT_NEAR(r.p_value, std::exp(epwa::normal_log_sf(r.z)), 1e-12);
}

TEST(Detector, RecordsFromLogitsAndBadInput) {
  auto gl = lists();
  const std::vector<float> logits = {0, 1, 0, 0, 3, 0, 0, 3};
  const auto rec = epwa::records_from_logits(logits, kE);
  ASSERT_EQ(rec.size(), 2u);
  EXPECT_EQ(rec[0].expert, 1);
  EXPECT_EQ(rec[1].expert, 0);
  EXPECT_THROW(epwa::records_from_logits(logits, 3), epwa::Error);
  epwa::Detector d(gl);
  const std::vector<int32_t> tokens = {1, 5, 6, 7};
  const std::vector<epwa::RouterRecord> two = {{0, 1}, {0, 1}};
  EXPECT_THROW(d.detect({tokens, 1, two}), epwa::Error);  // too few records
  const std::vector<epwa::RouterRecord> bad_e = {{0, 1}, {kE, 1}, {0, 1}};
  EXPECT_THROW(d.detect({tokens, 1, bad_e}), epwa::Error);
  const std::vector<int32_t> bad_tok = {1, kV, 6, 7};
  const std::vector<epwa::RouterRecord> three = {{0, 1}, {0, 1}, {0, 1}};
  EXPECT_THROW(d.detect({bad_tok, 1, three}), epwa::Error);
  EXPECT_THROW(d.detect({tokens, 5, three}), epwa::Error);
  epwa::DetectOptions o;
  o.method = epwa::DetectMethod::Pepi;
  EXPECT_THROW(epwa::Detector(gl, o).detect({tokens, 1, three}), epwa::Error);
  EXPECT_EQ(epwa::detect_method_from_name("weighted"), epwa::DetectMethod::Weighted);
  EXPECT_THROW(epwa::detect_method_from_name("kgw"), epwa::Error);
}

struct FixedPredictor : epwa::ExpertPredictor {
  std::vector<epwa::RouterRecord> rec;
  std::vector<epwa::RouterRecord> predict(std::span<const int32_t>, int64_t) override {
    return rec;
  }
};

TEST(Detector, PepiSlotUsesThePredictor) {
  auto gl = lists();
  const Built b = build(*gl, std::vector<bool>(20, true), 2);
  auto p = std::make_shared<FixedPredictor>();
  p->rec = b.records;
  epwa::DetectOptions o;
  o.method = epwa::DetectMethod::Pepi;
  o.count_repeats = true;
  epwa::Detector d(gl, o);
  d.set_expert_predictor(p);
  const auto r = d.detect({b.tokens, 2, {}});
  EXPECT_EQ(r.method, "pepi");
  EXPECT_EQ(r.g, 20);
}

}  // namespace
