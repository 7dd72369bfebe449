// The entropy threshold (docs/SPEC.md): selective bias leaves low-entropy steps alone, and
// entropy-aware detection scores only the tokens above it, with entropies from one full pass equal
// to those of the model's own logits; on human text its p-values stay valid (they are the exact
// binomial over the tokens kept).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "bundled.hpp"
#include "epwa/error.hpp"
#include "epwa/session.hpp"

namespace {

TEST(Entropy, OfLogits) {
  const std::vector<float> uniform(4, 0.5f);
  EXPECT_NEAR(epwa::next_token_entropy(uniform), std::log(4.0), 1e-12);
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_NEAR(epwa::next_token_entropy(std::vector<float>{1, 1, -inf, -inf}), std::log(2.0), 1e-12);
  EXPECT_NEAR(epwa::next_token_entropy(std::vector<float>{100, 0, 0}), 0.0, 1e-40);
  // p = (0.5, 0.25, 0.25): H = 1.5 ln 2.
  EXPECT_NEAR(epwa::next_token_entropy(std::vector<float>{std::log(2.0f), 0, 0}),
              1.5 * std::log(2.0), 1e-7);
}

TEST(Entropy, DetectionScoresOnlyTokensAboveTheThreshold) {
  epwa::Model& m = bundled::model();
  const auto& tok = bundled::tokenizer();
  auto ids = tok.encode(bundled::lines("heldout.txt", 1)[0], true, false);
  if (ids.size() > 120) ids.resize(120);
  const std::span<const int32_t> governing(ids.data(), ids.size() - 1);
  const auto full = epwa::router_records_and_entropy(m, governing, -1);
  // The entropies are those of the model's own logits; the records those of the router pass.
  epwa::Context ctx = m.make_context(static_cast<int64_t>(governing.size()));
  epwa::ForwardOptions fo;
  fo.all_logits = true;
  const auto logits = m.forward(governing, ctx, fo);
  const auto v = static_cast<size_t>(m.config().vocab_size);
  for (size_t i = 0; i < governing.size(); ++i)
    EXPECT_NEAR(full.entropy[i],
                epwa::next_token_entropy(std::span<const float>(logits.data() + i * v, v)), 1e-5);
  const auto records = epwa::router_records(m, governing, -1);
  ASSERT_EQ(records.size(), full.records.size());
  for (size_t i = 0; i < records.size(); ++i) EXPECT_EQ(records[i].expert, full.records[i].expert);

  const auto lists = epwa::make_green_lists(m, "entropy-key", 0.5);
  epwa::DetectOptions o;
  o.count_repeats = true;
  const auto all = epwa::detect_tokens(m, epwa::Detector(lists, o), ids, 1, -1);
  o.min_entropy = 3.0;
  o.tokens_detail = true;
  const auto some = epwa::detect_tokens(m, epwa::Detector(lists, o), ids, 1, -1);
  int64_t above = 0, green = 0;
  for (size_t t = 1; t < ids.size(); ++t)
    if (full.entropy[t - 1] >= 3.0f) {
      ++above;
      green += some.tokens[t - 1].green;
    }
  EXPECT_EQ(some.n, above);
  EXPECT_EQ(some.g, green);
  EXPECT_EQ(some.low_entropy_skipped, all.n - above);
  EXPECT_GT(some.low_entropy_skipped, 0);
  EXPECT_GT(above, 0);
  EXPECT_NEAR(some.p_value, std::exp(epwa::binomial_log_sf(green, above, 0.5)), 1e-12);
  // Without the entropies the detector refuses rather than scoring everything.
  epwa::DetectionInput in;
  in.tokens = ids;
  in.prompt_tokens = 1;
  in.records = records;
  EXPECT_THROW(epwa::Detector(lists, o).detect(in), epwa::Error);
}

// On 60 human passages, entropy-aware detection never fires and its p-values are not skewed low.
TEST(Entropy, HumanTextKeepsValidPValues) {
  epwa::Model& m = bundled::model();
  const auto& tok = bundled::tokenizer();
  epwa::DetectOptions o;
  o.min_entropy = 2.0;
  const epwa::Detector det(epwa::make_green_lists(m, "entropy-null-key", 0.5), o);
  double sum_p = 0;
  int texts = 0, below_05 = 0;
  for (const std::string& passage : bundled::lines("heldout.txt", 60)) {
    auto ids = tok.encode(passage, true, false);
    if (ids.size() > 151) ids.resize(151);
    const auto r = epwa::detect_tokens(m, det, ids, 1, -1);
    EXPECT_FALSE(r.detected) << passage.substr(0, 60);
    sum_p += r.p_value;
    below_05 += r.p_value < 0.05;
    ++texts;
  }
  ASSERT_EQ(texts, 60);
  // Under the null E[p] >= 1/2 (discrete binomial tails err upward) and P[p < 0.05] <= 0.05:
  // bounds loose enough for 60 texts (3 sigma).
  EXPECT_GT(sum_p / texts, 0.38);
  EXPECT_LE(below_05, 8);
}

}  // namespace
