// The build writes the bundled model as GGUF (CMake target epwa_bundle_gguf, `epwa convert`); that
// file gives exactly the numbers of the committed safetensors folder.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "support/run_cli.hpp"

namespace fs = std::filesystem;

namespace {

std::string run_ok(const std::string& args) {
  const auto r = epwa_test::run_cli(args);
  EXPECT_EQ(r.code, 0) << args << ": " << r.out;
  return r.out;
}

TEST(BundleGguf, BuildWritesItAndItMatchesTheSafetensors) {
  const fs::path gguf = fs::path(EPWA_BINARY).parent_path() / "models" / "epwa-tiny-moe.gguf";
  ASSERT_TRUE(fs::exists(gguf)) << gguf
                                << " missing: build the default target (it runs epwa convert)";
  const fs::path hf = fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
  const std::string tokens = " --tokens 1,415,2123,9,77 --json";
  auto a = nlohmann::json::parse(run_ok("trace --quiet --model " + hf.string() + tokens));
  auto b = nlohmann::json::parse(run_ok("trace --quiet --model " + gguf.string() + tokens));
  a.erase("load");
  b.erase("load");
  EXPECT_EQ(a, b);  // same bf16 weights, same kernels: identical logits and router outputs
}

}  // namespace
