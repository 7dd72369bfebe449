// `epwa attack steal` through the command line: a small run's table and JSON, and one-line errors
// with exit 2 for bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/run_cli.hpp"

namespace fs = std::filesystem;

namespace {

void expect_error(const std::string& args, const std::string& needle) {
  const auto r = epwa_test::run_cli("attack steal -q " + args);
  EXPECT_EQ(r.code, 2) << args << ": " << r.out;
  EXPECT_NE(r.out.find("epwa: error: "), std::string::npos) << args << ": " << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << args << ": " << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << ": " << r.out;
}

TEST(AttackCli, BadInputIsOneLineAndExit2) {
  expect_error("--observed 0", "--observed");
  expect_error("--observed 100,x", "--observed");
  expect_error("--schemes epwa,foo", "unknown scheme 'foo'");
  expect_error("--scrub-budget 2", "--scrub-budget");
  expect_error("--prompts /nonexistent/prompts.txt", "/nonexistent/prompts.txt");
  expect_error("--texts 150 --observed 100", "--texts 150 needs 300 prompts");
  expect_error("--temperature 0", "--temperature");
  expect_error("-t 5000", "--threads");
  expect_error("--attacker-oracle /nonexistent/x.oracle", "/nonexistent/x.oracle");
  expect_error("--attacker-oracle " + std::string(EPWA_SOURCE_DIR) + "/README.md", "README.md");
  expect_error("--spoof-model /nonexistent/writer", "/nonexistent/writer");
  const std::string human = std::string(EPWA_SOURCE_DIR) + "/data/heldout/heldout.txt";
  expect_error("--attacker-text-only /nonexistent/human.txt", "/nonexistent/human.txt");
  expect_error("--attacker-text-only " + human + " --attacker-oracle " +
                   std::string(EPWA_SOURCE_DIR) + "/models/epwa-tiny-moe.oracle",
               "--attacker-text-only: not with --attacker-oracle");
  // A writer whose tokens mean something else.
  const fs::path bundled = fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
  const fs::path other =
      fs::temp_directory_path() / ("epwa-attack-writer-" + std::to_string(::getpid()));
  fs::create_directories(other);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer_config.json"})
    fs::create_symlink(bundled / f, other / f);
  fs::copy_file(fs::path(EPWA_SOURCE_DIR) / "tests" / "data" / "tokenizers" / "llama_spm.model",
                other / "tokenizer.model");
  expect_error("--spoof-model " + other.string(), "--spoof-model: its tokenizer ");
  fs::remove_all(other);
  const auto r = epwa_test::run_cli("attack");
  EXPECT_EQ(r.code, 2) << r.out;
}

TEST(AttackCli, SmallRunPrintsTableAndJson) {
  const fs::path out =
      fs::temp_directory_path() / ("epwa-attack-" + std::to_string(::getpid()) + ".json");
  const auto r = epwa_test::run_cli(
      "attack steal -q --observed 100,300 --texts 2 --tokens 40 --json-out " + out.string(),
      epwa_test::Stderr::Drop);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("| scheme | N observed |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| epwa | 300 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| kgw | 100 |"), std::string::npos) << r.out;
  std::ifstream f(out);
  const nlohmann::json j = nlohmann::json::parse(f);
  fs::remove(out);
  ASSERT_EQ(j["schemes"].size(), 2u);
  EXPECT_EQ(j["schemes"][0]["scheme"], "epwa");
  EXPECT_EQ(j["schemes"][0]["contexts"], 8);
  EXPECT_EQ(j["schemes"][1]["contexts"], 8000);
  for (const auto& s : j["schemes"]) {
    ASSERT_EQ(s["rows"].size(), 2u);
    EXPECT_EQ(s["rows"][0]["observed_tokens"], 100);
    EXPECT_EQ(s["rows"][1]["observed_tokens"], 300);
    EXPECT_EQ(s["rows"][1]["spoof"]["texts"], 2);
    EXPECT_GT(s["rows"][1]["spoof"]["ppl_median"].get<double>(), 1.0);
  }
  EXPECT_EQ(j["params"]["observed"], nlohmann::json({100, 300}));
}

// Texts run in parallel, one per thread: the results (all but the timings) do not depend on how
// many threads there are.
TEST(AttackCli, ThreadCountDoesNotChangeResults) {
  nlohmann::json runs[2];
  for (int t = 1; t <= 2; ++t) {
    const auto r = epwa_test::run_cli(
        "attack steal -q --json --observed 100,400 --texts 3 --tokens 40 --schemes epwa,epwa-ctx "
        "--keys 2 --attacker-knows-keys -t " +
            std::to_string(t),
        epwa_test::Stderr::Drop);
    ASSERT_EQ(r.code, 0) << r.out;
    runs[t - 1] = nlohmann::json::parse(r.out);
    for (auto& s : runs[t - 1]["schemes"]) s.erase("seconds");
  }
  ASSERT_EQ(runs[0]["schemes"].size(), 2u);
  EXPECT_EQ(runs[0]["schemes"][1]["rows"][1]["observed_tokens"], 400);
  EXPECT_EQ(runs[0], runs[1]);
}

// The text-only attacker: token contexts against both schemes; the estimator's figures are
// comparable with the truth only where the scheme's context is the token (KGW).
TEST(AttackCli, TextOnlyAttackerRuns) {
  const auto r = epwa_test::run_cli(
      "attack steal -q --json --observed 300 --texts 2 --tokens 40 --schemes epwa,kgw "
      "--attacker-text-only " +
          std::string(EPWA_SOURCE_DIR) + "/data/heldout/heldout.txt",
      epwa_test::Stderr::Drop);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["params"]["attacker"].get<std::string>().starts_with("text-only"));
  const auto& epwa = j["schemes"][0]["rows"][0];
  const auto& kgw = j["schemes"][1]["rows"][0];
  EXPECT_TRUE(epwa["auc_seen"].is_null());
  EXPECT_GT(epwa["pairs"].get<int64_t>(), 100);
  EXPECT_EQ(epwa["spoof"]["texts"], 2);
  EXPECT_TRUE(kgw["auc_seen"].is_number());
  EXPECT_EQ(kgw["expert_accuracy"], 0.0);
}

// The public model as its own spoof writer, run in lockstep for the contexts: every result is the
// ordinary run's.
TEST(AttackCli, PublicModelAsSpoofWriterChangesNothing) {
  nlohmann::json runs[2];
  const std::string writer = (fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe").string();
  for (int w = 0; w < 2; ++w) {
    const auto r = epwa_test::run_cli(
        "attack steal -q --json --observed 300 --texts 2 --tokens 40 --schemes epwa,kgw" +
            (w ? " --spoof-model " + writer : std::string()),
        epwa_test::Stderr::Drop);
    ASSERT_EQ(r.code, 0) << r.out;
    runs[w] = nlohmann::json::parse(r.out);
    for (auto& s : runs[w]["schemes"]) s.erase("seconds");
  }
  EXPECT_EQ(runs[0]["params"]["spoof_writer"], "public model");
  EXPECT_NE(runs[1]["params"]["spoof_writer"].get<std::string>().find("second model"),
            std::string::npos);
  runs[1]["params"].erase("spoof_writer");
  runs[0]["params"].erase("spoof_writer");
  EXPECT_EQ(runs[0], runs[1]);
}

}  // namespace
