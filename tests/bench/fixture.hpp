// Small random GGUF models for the bench tests, written once per test program.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "epwa/make_model.hpp"

namespace bench_test {

inline std::filesystem::path temp_dir() {
  static const std::filesystem::path d = [] {
    auto p =
        std::filesystem::temp_directory_path() / ("epwa-bench-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(p);
    return p;
  }();
  return d;
}

// The "tiny" shape as an F16 GGUF (norms and routers f32).
inline std::filesystem::path tiny_f16() {
  const auto p = temp_dir() / "tiny-f16.gguf";
  if (!std::filesystem::exists(p))
    epwa::write_random_gguf(epwa::shape_config("tiny"), 5, epwa::DType::F16, p);
  return p;
}

// Rows that fit Q4_K's 256-wide blocks: hidden 256, expert FFN 256, 4 layers, `experts` experts.
inline epwa::ModelConfig ksize_config(int32_t experts) {
  epwa::ModelConfig c = epwa::shape_config("tiny");
  c.vocab_size = 320;
  c.hidden_size = 256;
  c.intermediate_size = 256;
  c.expert_intermediate_size = 256;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.num_experts = experts;
  c.experts_per_token = 2;
  return c;
}

inline std::filesystem::path ksize_f16(int32_t experts) {
  std::string name = "k";  // built in steps: GCC 12 warns (-Wrestrict) on the one-liner
  name += std::to_string(experts);
  name += "-f16.gguf";
  const auto p = temp_dir() / name;
  if (!std::filesystem::exists(p))
    epwa::write_random_gguf(ksize_config(experts), 9, epwa::DType::F16, p);
  return p;
}

struct Cleanup : ::testing::Environment {
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(temp_dir(), ec);
  }
};
// Registered once for the whole test program (an inline variable).
inline ::testing::Environment* const kCleanup = ::testing::AddGlobalTestEnvironment(new Cleanup);

}  // namespace bench_test
