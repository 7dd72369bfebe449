// Statistical behaviour on the bundled model with fixed seeds: no false positives on unwatermarked
// text, and >= 95% detection of 200-token watermarked generations (gamma 0.5, delta 2, GSG,
// temperature 1, top-p 1). The slowest test program of the suite: 60 generations of 200 tokens.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "bundled.hpp"
#include "epwa/session.hpp"

namespace {

constexpr int32_t kTokens = 200;

epwa::GenerateOptions options(uint64_t seed) {
  epwa::GenerateOptions o;
  o.max_new_tokens = kTokens;
  o.sampling.temperature = 1.0f;
  o.sampling.top_p = 1.0f;
  o.sampling.seed = seed;
  return o;  // no stop token: every text has 200 tokens
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// 40 human held-out passages (first 200 tokens) and 10 unwatermarked generations: no z above 4.
TEST(Power, UnwatermarkedTextIsNeverDetected) {
  epwa::Model& m = bundled::model();
  const auto& tok = bundled::tokenizer();
  const epwa::Detector det(epwa::make_green_lists(m, "power-test-key", 0.5), {});
  const auto t0 = std::chrono::steady_clock::now();
  double max_z = -1e9;
  int32_t texts = 0;
  for (const std::string& passage : bundled::lines("heldout.txt", 40)) {
    auto ids = tok.encode(passage, true, false);
    if (ids.size() > kTokens + 1) ids.resize(kTokens + 1);
    const auto r = epwa::detect_tokens(m, det, ids, 1, -1);
    EXPECT_LE(r.z, 4.0) << passage.substr(0, 60);
    EXPECT_FALSE(r.detected);
    max_z = std::max(max_z, r.z);
    ++texts;
  }
  const auto prompts = bundled::lines("prompts.txt", 10);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto prompt = tok.encode(prompts[i], true, false);
    const auto out = epwa::generate(m, prompt, options(1000 + i));
    const auto r =
        epwa::detect_tokens(m, det, concat(prompt, out), static_cast<int64_t>(prompt.size()), -1);
    EXPECT_LE(r.z, 4.0) << prompts[i];
    EXPECT_FALSE(r.detected);
    max_z = std::max(max_z, r.z);
    ++texts;
  }
  EXPECT_EQ(texts, 50);
  std::printf("[ power ] %d unwatermarked texts, max z %.2f, %.1f s\n", texts, max_z,
              seconds_since(t0));
}

TEST(Power, WatermarkedGenerationsAreDetected) {
  epwa::Model& m = bundled::model();
  const auto& tok = bundled::tokenizer();
  epwa::WatermarkConfig cfg;  // GSG, gamma 0.5, delta 2
  cfg.router_layer = -1;      // the last MoE layer
  epwa::Watermarker wm(m, "power-test-key", cfg);
  const epwa::Detector det(wm.lists(), {});
  const auto prompts = bundled::lines("prompts.txt", 50);
  ASSERT_EQ(prompts.size(), 50u);
  const auto t0 = std::chrono::steady_clock::now();
  int32_t detected = 0;
  double min_z = 1e9, sum_z = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto prompt = tok.encode(prompts[i], true, false);
    const auto out = wm.generate(m, prompt, options(i));
    ASSERT_EQ(out.size(), static_cast<size_t>(kTokens));
    const auto r =
        epwa::detect_tokens(m, det, concat(prompt, out), static_cast<int64_t>(prompt.size()), -1);
    detected += r.detected ? 1 : 0;
    min_z = std::min(min_z, r.z);
    sum_z += r.z;
  }
  std::printf("[ power ] %d/50 watermarked texts detected, min z %.2f, mean z %.2f, %.1f s\n",
              detected, min_z, sum_z / 50, seconds_since(t0));
  EXPECT_GE(detected, 48);  // >= 95% of 50
}

}  // namespace
