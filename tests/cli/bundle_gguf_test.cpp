// The build writes the bundled model as GGUF (CMake target epwa_bundle_gguf, `epwa convert`); that
// file gives exactly the numbers of the committed safetensors folder.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace fs = std::filesystem;

namespace {

std::string run_ok(const std::string& args) {
  const std::string cmd = std::string(EPWA_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << args << ": " << out;
  return out;
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
