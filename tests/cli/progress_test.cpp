// Long work shows its progress on a terminal (a pseudo-terminal from util-linux's `script`), and
// nothing of it when stderr is piped or the command is quiet.
#include <gtest/gtest.h>

#include <filesystem>

#include "support/run_cli.hpp"

namespace fs = std::filesystem;
using epwa_test::run_cli;
using epwa_test::run_command;

namespace {

TEST(Progress, ShownOnATerminalOnly) {
  const fs::path out = fs::temp_directory_path() / "epwa-progress-test.gguf";
  fs::remove(out);
  const std::string convert = std::string(EPWA_BINARY) + " convert --out " + out.string();
  const auto tty = run_command("script -qec '" + convert + "' /dev/null");
  EXPECT_EQ(tty.code, 0) << tty.out;
  EXPECT_NE(tty.out.find("converting: 1/63 tensors"), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find("converting: 63/63 tensors (100%)"), std::string::npos) << tty.out;
  // The line is ended before the next message.
  EXPECT_NE(tty.out.find("(100%)\x1b[K\r\nwrote"), std::string::npos) << tty.out;
  fs::remove(out);
  const auto piped = run_cli("convert --out " + out.string());
  EXPECT_EQ(piped.code, 0);
  EXPECT_EQ(piped.out.find("converting:"), std::string::npos) << piped.out;
  const auto quiet =
      run_command("script -qec '" + std::string(EPWA_BINARY) + " quantize -q --type q8_0 --out " +
                  out.string() + ".q8' /dev/null");
  EXPECT_EQ(quiet.code, 0) << quiet.out;
  EXPECT_EQ(quiet.out.find("quantizing:"), std::string::npos) << quiet.out;
  fs::remove(out);
  fs::remove(out.string() + ".q8");
}

// bench-load counts its child loads (6 configurations, one run each here) and ends the progress
// line before each table row.
TEST(Progress, BenchLoadCountsItsLoads) {
  const fs::path cache = fs::temp_directory_path() / "epwa-progress-bench-load";
  fs::remove_all(cache);
  const auto tty = run_command("script -qec '" + std::string(EPWA_BINARY) +
                               " bench-load --runs 1 --no-quality --cache-dir " + cache.string() +
                               "' /dev/null");
  EXPECT_EQ(tty.code, 0) << tty.out;
  EXPECT_NE(tty.out.find("bench-load: 1/"), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find(" loads (100%)"), std::string::npos) << tty.out;
  const auto piped = run_cli("bench-load --runs 1 --no-quality --cache-dir " + cache.string());
  EXPECT_EQ(piped.code, 0) << piped.out;
  EXPECT_EQ(piped.out.find("bench-load:"), std::string::npos) << piped.out;
  fs::remove_all(cache);
}

}  // namespace
