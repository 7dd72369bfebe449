// `epwa eval --frontier` on the bundled model: each setting's rows (plain, entropy-aware detection
// of the same texts, selective bias), scores at every length against the same negatives, the
// report's frontier chart, and the setting parser's errors.
#include <gtest/gtest.h>

#include <filesystem>

#include "epwa/error.hpp"
#include "epwa/eval.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The bundled model with the held-out prompts and passages.
epwa::eval::EvalOptions bundled_options() {
  epwa::eval::EvalOptions o;
  o.model_path = fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
  o.prompts = fs::path(EPWA_SOURCE_DIR) / "data" / "heldout" / "prompts.txt";
  o.human = fs::path(EPWA_SOURCE_DIR) / "data" / "heldout" / "heldout.txt";
  return o;
}

TEST(Frontier, SettingsRowsAndLengths) {
  epwa::eval::EvalOptions o = bundled_options();
  o.n = 6;
  o.n_human = 5;
  o.tokens = 60;
  o.bootstrap = 50;
  o.frontier = epwa::eval::parse_frontier("gsg:4,exp");
  o.frontier_lengths = {20, 60};
  o.frontier_entropy = 1.0;
  const json r = epwa::eval::run_eval(o);
  ASSERT_FALSE(r.contains("detection"));  // a frontier run measures nothing else
  const json& f = r["frontier"];
  EXPECT_EQ(f["negatives"]["unwatermarked"], 6);
  EXPECT_EQ(f["negatives"]["human"], 5);
  const json& rows = f["rows"];
  ASSERT_EQ(rows.size(), 4u);  // gsg: all tokens, entropy-aware, selective; exp
  EXPECT_EQ(rows[0]["setting"], "gsg delta 4");
  EXPECT_EQ(rows[1]["entropy_detection"], 1.0);
  EXPECT_EQ(rows[2]["setting"], "gsg delta 4, selective >= 1");
  EXPECT_EQ(rows[3]["mode"], "exp");
  // Entropy-aware detection reads the same texts: the same perplexity; selective bias writes
  // others.
  EXPECT_EQ(rows[0]["ppl_mean"], rows[1]["ppl_mean"]);
  EXPECT_NE(rows[0]["ppl_mean"], rows[2]["ppl_mean"]);
  // The unwatermarked texts are the cost's base; delta 4 costs perplexity.
  EXPECT_GT(rows[0]["ppl_cost"].get<double>(), 0.0);
  for (const auto& row : rows) {
    SCOPED_TRACE(row.dump());
    ASSERT_EQ(row["lengths"].size(), 2u);
    EXPECT_EQ(row["lengths"][0]["tokens"], 20);
    for (const auto& l : row["lengths"]) {
      EXPECT_EQ(l["n_neg"], 11);
      EXPECT_GE(l["tpr_z4"].get<double>(), 0.0);
      EXPECT_LE(l["tpr_z4"].get<double>(), 1.0);
      EXPECT_LE(l["fp_z4"].get<int>(), 11);
      // Watermarked texts score above the negatives, more so when longer.
      EXPECT_GT(l["z_pos_mean"].get<double>(), l["z_neg_mean"].get<double>() + 1);
    }
    EXPECT_GT(row["lengths"][1]["z_pos_mean"].get<double>(),
              row["lengths"][0]["z_pos_mean"].get<double>());
  }
  EXPECT_EQ(rows[0]["lengths"][1]["tpr_z4"], 1.0);  // 60 tokens at delta 4
  const std::string html = epwa::eval::render_report(r);
  EXPECT_NE(html.find("data-chart=\"frontier\""), std::string::npos);
  EXPECT_NE(html.find("gsg delta 4, selective &gt;= 1"), std::string::npos);
}

TEST(Frontier, ParserAndLengthErrors) {
  const auto s = epwa::eval::parse_frontier("gsg:1.5,ewp:2,exp");
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].mode, "gsg");
  EXPECT_EQ(s[0].delta, 1.5);
  EXPECT_EQ(s[1].mode, "ewp");
  EXPECT_EQ(s[2].mode, "exp");
  for (const char* bad : {"gsg", "exp:2", "kgw:1", "gsg:x", "gsg:0", "gsg:2x", "gsg:1,,exp", ""})
    EXPECT_THROW(epwa::eval::parse_frontier(bad), epwa::Error) << bad;
  epwa::eval::EvalOptions o = bundled_options();
  o.n = 1;
  o.tokens = 30;
  o.frontier = s;
  o.frontier_lengths = {50};  // longer than the texts generated
  EXPECT_THROW(epwa::eval::run_eval(o), epwa::Error);
}

}  // namespace
