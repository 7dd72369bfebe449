// Defence 2 through the command line: `generate --keyring` watermarks each response with one key
// of the keyring (KR-v1), `detect --keyring` finds it among all keys with the corrected decision.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "support/run_cli.hpp"

namespace fs = std::filesystem;

namespace {

fs::path write_keyring(const std::string& name, const std::string& body, mode_t mode) {
  const fs::path p = fs::temp_directory_path() / (name + std::to_string(::getpid()) + ".json");
  std::ofstream(p) << body;
  ::chmod(p.c_str(), mode);
  return p;
}

std::string ids(const nlohmann::json& a) {
  std::string s;
  for (const auto& v : a) s += (s.empty() ? "" : ",") + std::to_string(v.get<int32_t>());
  return s;
}

TEST(KeyringCli, GenerateRotatesAndDetectFindsTheKey) {
  const fs::path ring = write_keyring(
      "epwa-ring-", R"({"default": "a", "keys": {"a": "ring-a", "b": "ring-b", "c": "ring-c"}})",
      0600);
  std::set<std::string> used;
  for (int seed = 1; seed <= 6; ++seed) {
    const auto g = epwa_test::run_cli(
        "generate -q --prompt 'The old lighthouse keeper' --watermark gsg --temperature 0.8 -n 120 "
        "--json --seed " +
            std::to_string(seed) + " --keyring " + ring.string(),
        epwa_test::Stderr::Drop);
    ASSERT_EQ(g.code, 0) << g.out;
    const auto j = nlohmann::json::parse(g.out);
    const std::string key_id = j["watermark"]["keyring"]["key_id"];
    EXPECT_EQ(j["watermark"]["keyring"]["keys"], 3);
    used.insert(key_id);
    const std::string text =
        " --prompt-tokens " + ids(j["prompt_tokens"]) + " --tokens " + ids(j["tokens"]);
    const auto d = epwa_test::run_cli("detect -q --json --keyring " + ring.string() + text,
                                      epwa_test::Stderr::Drop);
    EXPECT_EQ(d.code, 0) << d.out;
    const auto r = nlohmann::json::parse(d.out);
    EXPECT_TRUE(r["detected"].get<bool>());
    EXPECT_EQ(r["keyring"]["key_id"], key_id);
    EXPECT_EQ(r["keyring"]["per_key"].size(), 3u);
    EXPECT_GT(r["keyring"]["z_threshold"].get<double>(), 4.0);
    // Reproducible: the same seed and prompt pick the same key.
    if (seed == 1) {
      const auto again = epwa_test::run_cli(
          "generate -q --prompt 'The old lighthouse keeper' --watermark gsg --temperature 0.8 -n "
          "120 --json --seed 1 --keyring " +
              ring.string(),
          epwa_test::Stderr::Drop);
      EXPECT_EQ(nlohmann::json::parse(again.out)["watermark"]["keyring"]["key_id"], key_id);
    }
    // A single other key does not detect it.
    const std::string other = key_id == "a" ? "ring-b" : "ring-a";
    const auto o = epwa_test::run_cli("detect -q --key " + other + text, epwa_test::Stderr::Drop);
    EXPECT_EQ(o.code, 1) << o.out;
  }
  EXPECT_GE(used.size(), 2u);  // six responses did not all use one key (P = 3 * 3^-6)
  fs::remove(ring);
}

TEST(KeyringCli, BadKeyringIsOneLineAndExit2) {
  const fs::path open_ring = write_keyring("epwa-ring-open-", R"({"keys": {"a": "x"}})", 0644);
  auto r = epwa_test::run_cli("detect -q --text hello --keyring " + open_ring.string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("epwa: error: "), std::string::npos) << r.out;
  fs::remove(open_ring);
  r = epwa_test::run_cli("detect -q --text hello --key k --keyring /nonexistent/ring.json");
  EXPECT_EQ(r.code, 2) << r.out;
  r = epwa_test::run_cli("generate -q --prompt hi --keyring /nonexistent/ring.json");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--keyring"), std::string::npos) << r.out;
}

}  // namespace
