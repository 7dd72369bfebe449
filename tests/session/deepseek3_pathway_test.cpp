// DeepSeek-V3's pathway (docs/SPEC.md section 0): the top-1 read from the router logits under the
// sigmoid + correction-bias rule is the first expert of the model's own selection at every
// position and MoE layer (where the argmax of the logits is not), its confidence the renormalised
// weight; and generation and detection agree on it.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "epwa/model.hpp"
#include "epwa/pepi.hpp"
#include "epwa/session.hpp"
#include "epwa/watermark.hpp"
#include "session/round_trip.hpp"

namespace fs = std::filesystem;

namespace {

struct Selections : epwa::RouterObserver {
  int checked = 0, not_argmax = 0;
  float scale = 1;
  void observe(const epwa::RouterObservation& o) override {
    ASSERT_NE(o.pathway, nullptr);
    ASSERT_TRUE(o.pathway->sigmoid());
    const epwa::ExpertChoice c = epwa::top1_expert(o);
    EXPECT_EQ(c.expert, o.topk[0]) << "layer " << o.layer << " position " << o.position;
    EXPECT_NEAR(c.confidence, o.weights[0] / scale, 1e-6);
    const auto argmax = std::max_element(o.logits.begin(), o.logits.end()) - o.logits.begin();
    not_argmax += argmax != o.topk[0];
    ++checked;
  }
};

std::unique_ptr<epwa::Model> v3() {
  return epwa::Model::load(fs::path(EPWA_TEST_DATA_DIR) / "ref" / "deepseek3");
}

TEST(Pathway, DeepSeekV3TopOneIsTheModelsOwnFirstChoice) {
  auto m = v3();
  Selections sel;
  sel.scale = m->config().routed_scaling_factor;
  std::vector<int32_t> tokens;
  for (int32_t i = 0; i < 96; ++i) tokens.push_back((i * 37 + 11) % m->config().vocab_size);
  auto ctx = m->make_context(static_cast<int64_t>(tokens.size()));
  epwa::ForwardOptions fo;
  fo.observer = &sel;
  m->forward(tokens, ctx, fo);
  EXPECT_EQ(sel.checked, 96 * m->config().num_moe_layers());
  // The correction bias and the group limit reorder the choice: the softmax rule would be wrong.
  EXPECT_GT(sel.not_argmax, 0);
}

// With a huge delta every generated token is green, for GSG and EWP, at the first and last MoE
// layer; the records of a teacher-forced pass are those of generation.
TEST(Pathway, DeepSeekV3HugeDeltaGivesAllGreen) {
  auto m = v3();
  const std::vector<int32_t> prompt{1, 17, 42, 99, 5, 230, 7, 64, 11, 300};
  for (int32_t layer : {0, -1})
    for (auto mode : {epwa::WatermarkMode::GSG, epwa::WatermarkMode::EWP}) {
      epwa::WatermarkConfig cfg;
      cfg.mode = mode;
      cfg.delta = 1e4;
      cfg.router_layer = layer;
      const auto [out, r] = epwa_test::round_trip(*m, prompt, cfg, "v3-key", 3, 24);
      ASSERT_EQ(out.size(), 24u);
      EXPECT_EQ(r.n, 24);
      EXPECT_EQ(r.g, r.n) << epwa::watermark_mode_name(mode) << " layer " << layer;
    }
}

// PEPI raw files keep the rule: the experts featurized from a saved and reloaded file are the
// router records of the same tokens.
TEST(Pathway, DeepSeekV3PepiRawKeepsTheRule) {
  auto m = v3();
  std::vector<std::vector<int32_t>> seqs{{1, 17, 42, 99, 5, 230, 7, 64, 11, 300, 12, 13, 77}};
  epwa::CollectOptions co;
  co.features.k = 8;
  const epwa::PepiRawData raw = epwa::collect_pepi_raw(*m, seqs, co);
  EXPECT_TRUE(raw.pathway.sigmoid());
  const fs::path file = fs::temp_directory_path() / "epwa-v3-raw.bin";
  raw.save(file);
  const epwa::PepiRawData back = epwa::PepiRawData::load(file);
  fs::remove(file);
  EXPECT_EQ(back.pathway, raw.pathway);
  const epwa::PepiFeaturizer feat(co.features, m->config().vocab_size);
  const std::vector<size_t> all{0};
  const epwa::PepiDataset d = epwa::featurize_raw(back, feat, all);
  const auto records = epwa::router_records(*m, seqs[0], -1);
  ASSERT_EQ(d.expert.size(), records.size());
  for (size_t p = 0; p < records.size(); ++p) {
    EXPECT_EQ(d.expert[p], records[p].expert) << p;
    EXPECT_EQ(d.confidence[p], records[p].confidence) << p;
  }
}

// The rule refuses logits it does not fit, in one line.
TEST(Pathway, SigmoidRuleChecksItsShape) {
  epwa::PathwayRule r;
  r.selection_bias = {0.1f, 0.2f, 0.3f, 0.4f};
  r.groups = 3;
  const std::vector<float> l{1, 2, 3, 4};
  EXPECT_THROW(epwa::top1_expert(l, r), epwa::Error);
  r.groups = 2;
  r.groups_kept = 1;
  r.top_k = 3;  // more than the two experts of one kept group
  EXPECT_THROW(epwa::top1_expert(l, r), epwa::Error);
  r.top_k = 2;
  EXPECT_EQ(epwa::top1_expert(l, r).expert, 3);
  EXPECT_THROW(epwa::top1_expert(std::vector<float>{1, 2, 3}, r), epwa::Error);
}

}  // namespace
