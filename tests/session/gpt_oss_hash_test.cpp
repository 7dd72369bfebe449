// GPT-OSS's router hash (IRSH-v2 over the router weights, their biases and the rule
// "bias,top<k>,softmax") equals the independent Python reference's (tools/spec/epwa_spec.py,
// "safetensors_families"), from safetensors and in 4-bit mode; and changing a router bias alone
// changes it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "epwa/load_options.hpp"
#include "epwa/model.hpp"
#include "epwa/session.hpp"

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
