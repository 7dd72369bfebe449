// The router confidence of docs/SPEC.md section 3 for both routing rules, against the independent
// Python reference (tools/spec/epwa_spec.py -> tests/data/spec_vectors.json, "confidence" and
// "sigmoid_pathway"): the softmax over all E logits, GPT-OSS's over the k largest, and
// DeepSeek-V3's sigmoid + correction-bias selection.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "epwa/watermark.hpp"

namespace {

TEST(SpecVectors, RouterConfidence) {
  std::ifstream f(std::string(EPWA_TEST_DATA_DIR) + "/spec_vectors.json");
  ASSERT_TRUE(f.good());
  const auto v = nlohmann::json::parse(f)["confidence"];
  const std::vector<std::vector<float>> rows = {
      [] {
        std::vector<float> r;
        for (int e = 0; e < 8; ++e) r.push_back(static_cast<float>(((e * 5) % 8 - 3) / 2.0));
        return r;
      }(),
      {1.0f, 3.0f, 3.0f, 0.0f, -2.0f, 2.5f, 0.25f, 3.0f}};
  ASSERT_EQ(v["rows"].size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i)
    for (const auto& want : v["rows"][i]) {
      const int32_t over = want["over"];
      SCOPED_TRACE("row " + std::to_string(i) + " over " + std::to_string(over));
      const epwa::ExpertChoice c =
          epwa::top1_expert(rows[i], epwa::PathwayRule::softmax_over(over));
      EXPECT_EQ(c.expert, want["expert"].get<int32_t>());
      EXPECT_EQ(c.confidence, static_cast<float>(std::stod(want["confidence"].get<std::string>())));
    }
  // The top-k softmax's confidence is larger: fewer terms in its denominator.
  EXPECT_GT(epwa::top1_expert(rows[0], epwa::PathwayRule::softmax_over(4)).confidence,
            epwa::top1_expert(rows[0]).confidence);
}

TEST(SpecVectors, SigmoidPathway) {
  std::ifstream f(std::string(EPWA_TEST_DATA_DIR) + "/spec_vectors.json");
  ASSERT_TRUE(f.good());
  const auto v = nlohmann::json::parse(f)["sigmoid_pathway"];
  epwa::PathwayRule rule;
  for (const auto& b : v["bias"]) rule.selection_bias.push_back(std::stof(b.get<std::string>()));
  rule.groups = v["groups"];
  rule.groups_kept = v["groups_kept"];
  rule.top_k = v["top_k"];
  std::vector<std::vector<float>> rows = {
      {2, -1, 0.5f, 1.5f, -0.5f, 3, 0.25f, 1}, {}, {-6, 6, 2, 2, 1, 1, 0, 0}};
  for (int e = 0; e < 8; ++e) rows[1].push_back(static_cast<float>(((e * 3) % 8 - 4) / 4.0));
  ASSERT_EQ(v["rows"].size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    // The softmax rule would take the argmax: the bias and the group limit move the choice.
    EXPECT_EQ(epwa::top1_expert(rows[i]).expert, v["argmax"][i].get<int32_t>());
    for (const auto& want : v["rows"][i]) {
      rule.renormalize = want["renormalize"];
      SCOPED_TRACE("row " + std::to_string(i) + (rule.renormalize ? " renorm" : " raw"));
      const epwa::ExpertChoice c = epwa::top1_expert(rows[i], rule);
      EXPECT_EQ(c.expert, want["expert"].get<int32_t>());
      EXPECT_NE(c.expert, v["argmax"][i].get<int32_t>());
      EXPECT_EQ(c.confidence, static_cast<float>(std::stod(want["confidence"].get<std::string>())));
    }
  }
}

}  // namespace
