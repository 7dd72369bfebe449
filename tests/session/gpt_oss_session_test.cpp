// GPT-OSS's router hash (IRSH-v2 over the router weights, their biases and the rule
// "bias,top<k>,softmax") equals the independent Python reference's (tools/spec/epwa_spec.py,
// "safetensors_families"), from safetensors and in 4-bit mode; changing a router bias alone
// changes it; and the watermark's generation and detection agree on its router.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "epwa/load_options.hpp"
#include "epwa/model.hpp"
#include "epwa/session.hpp"
#include "epwa/watermark.hpp"
#include "session/round_trip.hpp"

namespace fs = std::filesystem;

namespace {

TEST(RouterHash, GptOssMatchesTheSpecReference) {
  std::ifstream f(fs::path(EPWA_TEST_DATA_DIR) / "spec_vectors.json");
  ASSERT_TRUE(f.good());
  const auto v = nlohmann::json::parse(f);
  ASSERT_EQ(v["safetensors_families"].size(), 1u);
  for (const auto& fam : v["safetensors_families"]) {
    const std::string name = fam["model"], want = fam["hash"];
    SCOPED_TRACE(name);
    const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / name;
    EXPECT_EQ(epwa::router_hash(*epwa::Model::load(dir)), want);
    epwa::LoadOptions o;
    o.mode = epwa::LoadMode::Bits4;
    o.use_cache = false;
    o.warn = [](const std::string&) {};
    EXPECT_EQ(epwa::router_hash(*epwa::Model::load(dir, o)), want);
  }
}

// The bias is hashed: the same weights with one bias value nudged give another hash.
TEST(RouterHash, GptOssBindsTheRouterBias) {
  const fs::path src = fs::path(EPWA_TEST_DATA_DIR) / "ref" / "gptoss";
  const fs::path dir = fs::temp_directory_path() / "epwa-gptoss-bias";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(src / "config.json", dir / "config.json");
  fs::copy_file(src / "model.safetensors", dir / "model.safetensors");
  const std::string before = epwa::router_hash(*epwa::Model::load(dir));
  {
    // model.layers.1.mlp.router.bias: its first f32 value, found through the header.
    std::fstream io(dir / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    uint64_t n = 0;
    io.read(reinterpret_cast<char*>(&n), 8);
    std::string header(n, '\0');
    io.read(header.data(), static_cast<std::streamsize>(n));
    const auto h = nlohmann::json::parse(header);
    const int64_t at = 8 + static_cast<int64_t>(n) +
                       h["model.layers.1.mlp.router.bias"]["data_offsets"][0].get<int64_t>();
    float x = 0;
    io.seekg(at);
    io.read(reinterpret_cast<char*>(&x), 4);
    x += 0.25f;
    io.seekp(at);
    io.write(reinterpret_cast<const char*>(&x), 4);
  }
  EXPECT_NE(epwa::router_hash(*epwa::Model::load(dir)), before);
  fs::remove_all(dir);
}

}  // namespace

namespace {

// Every router observation of a pass, copied.
struct AllRouters : epwa::RouterObserver {
  struct Row {
    int32_t layer;
    int64_t position;
    std::vector<float> logits;
  };
  std::vector<Row> rows;
  void observe(const epwa::RouterObservation& o) override {
    rows.push_back({o.layer, o.position, {o.logits.begin(), o.logits.end()}});
  }
};

// Generation and detection agree on GPT-OSS's router (biased logits, its last MoE layer): with a
// huge delta every generated token is green for GSG and EWP; the records carry the top-k softmax
// confidence of docs/SPEC.md section 3.
TEST(Alignment, GptOssHugeDeltaGivesAllGreen) {
  auto m = epwa::Model::load(fs::path(EPWA_TEST_DATA_DIR) / "ref" / "gptoss");
  const std::vector<int32_t> prompt{1, 17, 42, 99, 5, 230, 7, 64, 11, 300};
  for (auto mode : {epwa::WatermarkMode::GSG, epwa::WatermarkMode::EWP}) {
    epwa::WatermarkConfig cfg;
    cfg.mode = mode;
    cfg.delta = 1e4;
    cfg.router_layer = -1;
    const auto [out, r] = epwa_test::round_trip(*m, prompt, cfg, "alignment-key", 5, 24);
    ASSERT_EQ(out.size(), 24u);  // beyond the sliding window of 8
    EXPECT_EQ(r.n, 24);
    EXPECT_EQ(r.g, r.n) << epwa::watermark_mode_name(mode);
    EXPECT_TRUE(r.detected);
  }
  // Each record's confidence is the softmax over the k = 3 largest logits at its top-1.
  const std::vector<int32_t> tokens{1, 17, 42, 99, 5, 230, 7, 64, 11, 300, 12, 13};
  const auto records = epwa::router_records(*m, tokens, -1);
  AllRouters all;
  auto ctx = m->make_context();
  epwa::ForwardOptions fo;
  fo.observer = &all;
  m->forward(tokens, ctx, fo);
  ASSERT_EQ(records.size(), tokens.size());
  int checked = 0;
  for (const auto& o : all.rows)
    if (o.layer == 1) {
      const auto want = epwa::top1_expert(o.logits, epwa::PathwayRule::softmax_over(3));
      EXPECT_EQ(records[o.position].expert, want.expert);
      EXPECT_EQ(records[o.position].confidence, want.confidence);
      EXPECT_GT(want.confidence, epwa::top1_expert(o.logits).confidence);
      ++checked;
    }
  EXPECT_EQ(checked, static_cast<int>(tokens.size()));
}

}  // namespace
