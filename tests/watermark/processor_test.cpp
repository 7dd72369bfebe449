#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/watermark.hpp"

namespace {

const std::string kHash(64, 'c');
constexpr int32_t kV = 3000, kE = 4, kLayer = 2;

std::shared_ptr<const epwa::GreenLists> lists() {
  return std::make_shared<epwa::GreenLists>("proc-key", kHash, kV, 0.5, kE);
}

void observe(epwa::WatermarkProcessor& p, int32_t layer, int64_t pos, std::vector<float> logits) {
  const std::vector<int32_t> topk = {0, 1};  // deliberately wrong: the processor must use logits
  const std::vector<float> w = {0.5f, 0.5f};
  p.observe({layer, pos, logits, topk, w});
}

// Selective bias: a step whose next-token distribution is flat (entropy ln V) is biased; one where
// a token dominates (entropy near 0) is left exactly as it was.
TEST(WatermarkProcessor, MinEntropyLeavesLowEntropyStepsAlone) {
  epwa::WatermarkConfig cfg;
  cfg.delta = 2.0;
  cfg.min_entropy = 1.0;
  epwa::WatermarkProcessor p(cfg, lists());
  std::vector<float> flat(kV, 0.0f);
  observe(p, 0, 0, {5.0f, 0.0f, 0.0f, 0.0f});
  p.process(flat);
  EXPECT_EQ(std::count(flat.begin(), flat.end(), 2.0f), lists()->green_count());
  std::vector<float> peaked(kV, 0.0f);
  peaked[3] = 50.0f;
  const std::vector<float> before = peaked;
  observe(p, 0, 1, {5.0f, 0.0f, 0.0f, 0.0f});
  p.process(peaked);
  EXPECT_EQ(peaked, before);
  cfg.min_entropy = -1;
  EXPECT_THROW(epwa::WatermarkProcessor(cfg, lists()), epwa::Error);
}

TEST(WatermarkProcessor, GsgBiasesExactlyTheGreenList) {
  epwa::WatermarkConfig cfg;
  cfg.delta = 2.5;
  cfg.router_layer = kLayer;
  epwa::WatermarkProcessor p(cfg, lists());
  observe(p, kLayer, 6, {0.1f, 0.2f, 3.0f, 0.0f});
  observe(p, kLayer + 1, 6, {9.0f, 0.0f, 0.0f, 0.0f});  // another layer: ignored
  EXPECT_EQ(p.last_expert(), 2);
  EXPECT_EQ(p.last_position(), 6);
  std::vector<float> logits(kV);
  for (int32_t v = 0; v < kV; ++v) logits[v] = 0.001f * v;
  const auto before = logits;
  p.process(logits);
  int32_t biased = 0;
  for (int32_t v = 0; v < kV; ++v) {
    const float expect = before[v] + (p.lists().is_green(2, v) ? 2.5f : 0.0f);
    EXPECT_FLOAT_EQ(logits[v], expect) << v;
    biased += logits[v] != before[v];
  }
  EXPECT_EQ(biased, kV / 2);
}

TEST(WatermarkProcessor, EwpScalesByConfidenceAndExpertDelta) {
  epwa::WatermarkConfig cfg;
  cfg.mode = epwa::WatermarkMode::EWP;
  cfg.expert_deltas = {1.0, 2.0, 3.0, 4.0};
  cfg.router_layer = kLayer;
  epwa::WatermarkProcessor p(cfg, lists());
  const std::vector<float> rl = {0.0f, 1.0f, 0.5f, 1.0f};  // tie between 1 and 3 -> 1
  observe(p, kLayer, 3, rl);
  EXPECT_EQ(p.last_expert(), 1);
  const double c = 1.0 / (std::exp(-1.0) + 1.0 + std::exp(-0.5) + 1.0);
  EXPECT_NEAR(p.last_confidence(), c, 1e-6);
  EXPECT_NEAR(p.current_bias(), 2.0 * c, 1e-6);
  std::vector<float> logits(kV, -1.0f);
  p.process(logits);
  for (int32_t v = 0; v < kV; ++v)
    EXPECT_NEAR(logits[v], p.lists().is_green(1, v) ? -1.0 + 2.0 * c : -1.0, 1e-6);
}

TEST(WatermarkProcessor, KeepsTheLastPositionAndNeedsAFreshObservation) {
  epwa::WatermarkConfig cfg;
  cfg.router_layer = 0;
  epwa::WatermarkProcessor p(cfg, lists());
  std::vector<float> logits(kV, 0.0f);
  EXPECT_THROW(p.process(logits), epwa::Error);  // nothing observed
  // A prefill reports every prompt position; the last one governs the next token.
  observe(p, 0, 0, {5.0f, 0.0f, 0.0f, 0.0f});
  observe(p, 0, 1, {0.0f, 0.0f, 0.0f, 5.0f});
  EXPECT_EQ(p.last_expert(), 3);
  EXPECT_TRUE(p.has_observation());
  p.process(logits);
  EXPECT_FALSE(p.has_observation());
  EXPECT_THROW(p.process(logits), epwa::Error);  // stale: no new forward pass
  observe(p, 0, 2, {0.0f, 5.0f, 0.0f, 0.0f});
  std::vector<float> wrong(kV - 1);
  EXPECT_THROW(p.process(wrong), epwa::Error);
  EXPECT_THROW(observe(p, 0, 3, {1.0f, 2.0f}), epwa::Error);  // wrong number of experts
  p.reset();
  EXPECT_FALSE(p.has_observation());
}

// The largest delta forces green tokens yet keeps their order: with an unbounded one (1e30, inf)
// every green logit became the same number and the lowest green id (often <unk>) won.
TEST(WatermarkProcessor, LargestDeltaForcesGreenAndKeepsTheirOrder) {
  epwa::WatermarkConfig cfg;
  cfg.delta = epwa::kMaxDelta;
  cfg.router_layer = 0;
  epwa::WatermarkProcessor p(cfg, lists());
  observe(p, 0, 0, {0.0f, 0.0f, 1.0f, 0.0f});
  std::vector<float> logits(kV);
  for (int32_t v = 0; v < kV; ++v) logits[v] = 0.01f * static_cast<float>(v);
  p.process(logits);
  const int32_t best =
      static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  int32_t last_green = -1;
  for (int32_t v = 0; v < kV; ++v)
    if (p.lists().is_green(2, v)) last_green = v;
  EXPECT_EQ(best, last_green);
  for (double bad : {epwa::kMaxDelta * 1.01, 1e30, std::numeric_limits<double>::infinity(), -1.0,
                     std::numeric_limits<double>::quiet_NaN()}) {
    cfg.delta = bad;
    EXPECT_THROW(epwa::WatermarkProcessor(cfg, lists()), epwa::Error) << bad;
  }
  cfg.delta = 2;
  cfg.expert_deltas = {1.0, 2.0, 1e30, 4.0};
  EXPECT_THROW(epwa::WatermarkProcessor(cfg, lists()), epwa::Error);
}

TEST(WatermarkProcessor, RejectsBadConfig) {
  epwa::WatermarkConfig cfg;
  cfg.router_layer = 0;
  cfg.gamma = 0.25;
  EXPECT_THROW(epwa::WatermarkProcessor(cfg, lists()), epwa::Error);
  cfg.gamma = 0.5;
  cfg.expert_deltas = {1.0, 2.0};
  EXPECT_THROW(epwa::WatermarkProcessor(cfg, lists()), epwa::Error);
  cfg.expert_deltas = {};
  cfg.router_layer = -1;
  EXPECT_THROW(epwa::WatermarkProcessor(cfg, lists()), epwa::Error);
  cfg.router_layer = 0;
  EXPECT_THROW(epwa::WatermarkProcessor(cfg, nullptr), epwa::Error);
  EXPECT_EQ(epwa::watermark_mode_from_name("ewp"), epwa::WatermarkMode::EWP);
  EXPECT_THROW(epwa::watermark_mode_from_name("kgw"), epwa::Error);
}

}  // namespace

namespace {

// CTX-v1: the list biased is that of (expert, bucket of the previous token); without a fresh
// previous token the processor refuses rather than bias a stale context.
TEST(WatermarkProcessor, ContextBucketsBiasTheListOfExpertAndPreviousToken) {
  auto ctx = std::make_shared<epwa::GreenLists>("proc-key", kHash, kV, 0.5, kE, 8);
  epwa::WatermarkConfig cfg;
  cfg.delta = 3.0;
  cfg.context_buckets = 8;
  epwa::WatermarkProcessor p(cfg, ctx);
  for (int32_t prev : {5, 17, 2999}) {
    std::vector<float> logits(kV, 0.0f);
    observe(p, 0, prev, {0.0f, 4.0f, 0.0f, 0.0f});  // expert 1
    p.set_previous_token(prev);
    p.process(logits);
    const int32_t c = ctx->context(1, prev);
    EXPECT_EQ(c, 8 + ctx->bucket(prev));
    for (int32_t v = 0; v < kV; ++v)
      ASSERT_EQ(logits[static_cast<size_t>(v)], ctx->is_green(c, v) ? 3.0f : 0.0f) << v;
  }
  std::vector<float> logits(kV, 0.0f);
  observe(p, 0, 9, {0.0f, 4.0f, 0.0f, 0.0f});
  EXPECT_THROW(p.process(logits), epwa::Error);  // no previous token given for this step
  cfg.context_buckets = 0;
  EXPECT_THROW(epwa::WatermarkProcessor(cfg, ctx), epwa::Error);  // config and lists disagree
}

}  // namespace
