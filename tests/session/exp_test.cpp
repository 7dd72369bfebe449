// The distortion-free exp mode on the bundled model: keyed texts are detected with exact p-values
// and not under another key; a context is keyed once per text (context masking); greedy refused.
#include <gtest/gtest.h>

#include <set>

#include "bundled.hpp"
#include "epwa/detect.hpp"
#include "epwa/error.hpp"
#include "epwa/session.hpp"

namespace {

TEST(ExpMode, KeyedTextsAreDetectedAndOnlyUnderTheirKey) {
  epwa::Model& m = bundled::model();
  const auto& tok = bundled::tokenizer();
  epwa::WatermarkConfig cfg;
  cfg.mode = epwa::WatermarkMode::Exp;
  cfg.router_layer = -1;
  epwa::Watermarker wm(m, "exp-test-key", cfg);
  epwa::DetectOptions o;
  o.scheme = epwa::DetectScheme::Exp;
  const epwa::Detector det(wm.lists(), o);
  const epwa::Detector other(epwa::make_green_lists(m, "another-key", 0.5), o);
  const auto prompts = bundled::lines("prompts.txt", 6);
  ASSERT_EQ(prompts.size(), 6u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto prompt = tok.encode(prompts[i], true, false);
    epwa::GenerateOptions go;
    go.max_new_tokens = 150;
    go.sampling.temperature = 0.8f;
    go.sampling.seed = i;
    const auto out = wm.generate(m, prompt, go);
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), out.begin(), out.end());
    const auto r = epwa::detect_tokens(m, det, all, static_cast<int64_t>(prompt.size()), -1);
    EXPECT_TRUE(r.detected) << i << ": z " << r.z << ", n " << r.n;
    EXPECT_LT(r.log10_p, -10) << i;
    const auto x = epwa::detect_tokens(m, other, all, static_cast<int64_t>(prompt.size()), -1);
    EXPECT_FALSE(x.detected) << i;
    EXPECT_GT(x.p_value, 1e-4) << i;
  }
  epwa::GenerateOptions greedy;
  greedy.sampling.temperature = 0;
  EXPECT_THROW(wm.generate(m, tok.encode("The river", true, false), greedy), epwa::Error);
}

TEST(ExpMode, RepeatedContextsDrawFreelyAndTheSeedStillMattersThere) {
  epwa::Model& m = bundled::model();
  const auto& tok = bundled::tokenizer();
  epwa::WatermarkConfig cfg;
  cfg.mode = epwa::WatermarkMode::Exp;
  cfg.router_layer = -1;
  epwa::Watermarker wm(m, "exp-test-key", cfg);
  const auto prompt = tok.encode("The river", true, false);
  std::set<std::vector<int32_t>> texts;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    epwa::GenerateOptions go;
    go.max_new_tokens = 200;
    go.sampling.temperature = 0.8f;
    go.sampling.seed = seed;
    texts.insert(wm.generate(m, prompt, go));
  }
  // Texts from one prompt share their keyed start (the known cost) but part once a context
  // repeats and the sampler's own seed draws.
  EXPECT_EQ(texts.size(), 4u);
}

}  // namespace
