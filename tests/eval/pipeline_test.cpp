// The whole pipeline on a tiny random model (with the bundled tokenizer) in seconds.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"
#include "epwa/eval.hpp"
#include "epwa/make_model.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
fs::path tiny_model() {
  const fs::path dir = fs::temp_directory_path() / ("epwa_eval_tiny_" + std::to_string(::getpid()));
  if (fs::exists(dir / "config.json")) return dir;
  epwa::ModelConfig c = epwa::shape_config("tiny");
  c.vocab_size = 8000;  // the bundled tokenizer's size
  epwa::write_random_hf(c, 7, epwa::DType::F32, dir);
  const fs::path bundled = fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
  fs::copy_file(bundled / "tokenizer.model", dir / "tokenizer.model",
                fs::copy_options::overwrite_existing);
  fs::copy_file(bundled / "tokenizer_config.json", dir / "tokenizer_config.json",
                fs::copy_options::overwrite_existing);
  return dir;
}

epwa::eval::EvalOptions tiny_options(const fs::path& model) {
  epwa::eval::EvalOptions o;
  o.model_path = model;
  o.prompts = fs::path(EPWA_SOURCE_DIR) / "data" / "heldout" / "prompts.txt";
  o.human = fs::path(EPWA_SOURCE_DIR) / "data" / "heldout" / "heldout.txt";
  o.n = 4;
  o.n_human = 4;
  o.tokens = 30;
  o.delta = 12.0;  // a random model is near-uniform: a big bias makes the test decisive
  o.delta_grid = {4.0};
  o.bootstrap = 50;
  o.attack_rates = {0.1, 0.3};
  o.attack_texts = 2;
  o.crop_window = 10;
  o.cspv_sample = 12;
  return o;
}
}  // namespace

TEST(Pipeline, TinyModelEndToEnd) {
  const fs::path model = tiny_model();
  const fs::path out = model / "out";
  auto o = tiny_options(model);
  int progress_lines = 0;
  o.progress = [&](const std::string&) { ++progress_lines; };
  o.cross_texts = 2;
  o.delta_texts = 3;
  std::vector<std::string> phases;
  o.checkpoint = [&](const json& j) {
    phases.push_back(j.value("partial", ""));
    // The partial file is on disk while the run goes on.
    EXPECT_TRUE(fs::exists(out / "results.partial.json"));
  };
  const json r = epwa::eval::run_eval_to_dir(o, out);
  EXPECT_GT(progress_lines, 5);
  ASSERT_EQ(phases.size(), 3u);  // detection, attacks, the one extra delta
  EXPECT_EQ(phases[0], "finished up to: detection");
  EXPECT_FALSE(fs::exists(out / "results.partial.json"));  // removed at the end
  ASSERT_TRUE(fs::exists(out / "results.json"));
  ASSERT_TRUE(fs::exists(out / "report.html"));
  json back;
  {  // closed before the folder is removed: Windows cannot delete an open file
    std::ifstream f(out / "results.json");
    back = json::parse(f);
  }
  EXPECT_EQ(back["model"]["router_hash"].get<std::string>().size(), 64u);
  // 2 modes x 2 prompt conditions x 3 methods x 2 repeat settings
  ASSERT_EQ(back["detection"].size(), 24u);
  bool seen = false;
  for (const auto& d : back["detection"]) {
    EXPECT_EQ(d["n_pos"], 4);
    EXPECT_EQ(d["n_neg"], 8);  // 4 human + 4 unwatermarked
    if (d["mode"] == "gsg" && d["method"] == "full" && d["prompt"] == true &&
        d["repeats"] == false) {
      seen = true;
      EXPECT_GT(d["z_pos_mean"].get<double>(), d["z_neg_mean"].get<double>() + 2.0);
      EXPECT_GE(d["auc"].get<double>(), 0.9);
    }
  }
  EXPECT_TRUE(seen);
  // attacks: per mode 2 sources x 3 kinds x 2 rates (with prompt) + 2 x 2 substitutions without,
  // each for 3 methods, plus crop/splice x 3 methods
  EXPECT_EQ(back["attacks"].size(), 2u * ((12 + 4) * 3 + 2 * 3));
  ASSERT_EQ(back["delta_grid"].size(), 4u);
  for (const auto& g : back["delta_grid"]) EXPECT_EQ(g["n"], 3) << g.dump();  // --delta-texts
  EXPECT_EQ(back["delta_grid"][3]["delta"], 4.0);
  // Entropy and green mass of the unwatermarked texts' positions.
  const json& sp = back["spread"];
  EXPECT_GT(sp["positions"].get<int>(), 0);
  EXPECT_GT(sp["entropy_nats_mean_t1"].get<double>(), 0.0);
  EXPECT_LE(sp["entropy_nats_mean_t1"].get<double>(), std::log(8000.0) + 1e-9);
  const double g0 = sp["green_mass_before"].get<double>();
  EXPECT_GT(g0, 0.2);  // gamma 0.5 green lists of a near-uniform model
  EXPECT_LT(g0, 0.8);
  double last = g0;
  for (const auto& a : sp["green_mass_after"]) {  // grows with delta
    EXPECT_GT(a["green_mass"].get<double>(), last);
    last = a["green_mass"].get<double>();
  }
  EXPECT_FALSE(back["pepi"].contains("oracle"));  // no oracle given
  EXPECT_GT(back["quality"]["none"]["ppl_mean"].get<double>(), 1.0);
  EXPECT_FALSE(back["sample"]["tokens"].empty());
  // cross-precision: 4-bit and stored generation, each detected by stored, 8-bit and 4-bit loads
  ASSERT_TRUE(back["cross_precision"].is_array());
  EXPECT_EQ(back["cross_precision"].size(), 6u);
  for (const auto& c : back["cross_precision"]) {
    EXPECT_EQ(c["n"], 2);  // --cross-texts
    if (c["generated_with"] != c["detected_with"]) {
      EXPECT_GT(c["router_agreement"].get<double>(), 0.3);
    }
  }
  std::stringstream html;
  html << std::ifstream(out / "report.html").rdbuf();
  for (const char* id : {"roc-gsg", "zhist-gsg", "attacks-gsg", "ppl-delta", "id=\"tokens\""})
    EXPECT_NE(html.str().find(id), std::string::npos) << id;
  fs::remove_all(model);
}

TEST(Pipeline, BadInputsThrow) {
  auto o = tiny_options(fs::temp_directory_path() / "epwa_eval_no_such_model");
  EXPECT_THROW(epwa::eval::run_eval(o), epwa::Error);
  o.n = 0;
  EXPECT_THROW(epwa::eval::run_eval(o), epwa::Error);
  auto p = tiny_options(tiny_model());
  p.oracle = fs::temp_directory_path() / "epwa_eval_no_such.oracle";
  EXPECT_THROW(epwa::eval::run_eval(p), epwa::Error);
}

// The defences against stealing: a keyring of 4 keys (a key per text by KR-v1, detection over the
// keyring, z corrected for m) with CTX-v1 lists. Texts of several keys are all detected, and
// each watermarked text is detected under its own key with the corrected threshold.
TEST(Pipeline, KeyringAndContextBuckets) {
  const fs::path model = tiny_model();
  auto o = tiny_options(model);
  o.keys = 4;
  o.context_buckets = 16;
  o.cross_precision = false;
  o.attack_texts = 1;
  o.delta_grid = {};
  const json r = epwa::eval::run_eval(o);
  EXPECT_EQ(r["params"]["keys"], 4);
  EXPECT_EQ(r["params"]["context_buckets"], 16);
  const double shift = epwa::keyring_threshold(4.0, 4) - 4.0;
  EXPECT_GT(shift, 0.3);
  EXPECT_DOUBLE_EQ(r["params"]["z_correction"].get<double>(), shift);
  int keys_used = 0, texts = 0;
  for (const auto& c : r["keyring"]["texts_per_key"]) {
    keys_used += c.get<int>() > 0;
    texts += c.get<int>();
  }
  EXPECT_EQ(texts, 4);
  EXPECT_GE(keys_used, 2);  // the rotation spread the texts (seeded: the same every run)
  bool seen = false;
  for (const auto& d : r["detection"]) {
    if (d["mode"] != "gsg" || d["method"] != "full" || d["prompt"] != true || d["repeats"] != false)
      continue;
    seen = true;
    EXPECT_EQ(d["tpr_z4"], 1.0) << d["z_pos"].dump();  // every key's texts
    EXPECT_EQ(d["fpr_z4"], 0.0) << d["z_neg"].dump();
  }
  EXPECT_TRUE(seen);
  // The sample's token view colours the text by its own key: most scored tokens green.
  int green = 0, scored = 0;
  for (const auto& t : r["sample"]["tokens"])
    if (t["scored"].get<bool>()) green += t["green"].get<bool>(), ++scored;
  EXPECT_GT(green, scored * 3 / 4);
  fs::remove_all(model);
}
