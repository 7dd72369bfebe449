// `epwa eval --report-only`: report.html rewritten from a results.json, nothing run; a missing or
// malformed results file is a one-line error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "eval/synthetic_results.hpp"
#include "support/run_cli.hpp"

namespace fs = std::filesystem;

namespace {

TEST(EvalCli, ReportOnlyRewritesTheReport) {
  const fs::path dir = fs::temp_directory_path() / ("epwa-report-only-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "results.json") << epwa::eval::testing::synthetic_results().dump();
  auto r = epwa_test::run_cli("eval --report-only --out " + dir.string());
  EXPECT_EQ(r.code, 0) << r.out;
  std::ifstream f(dir / "report.html");
  const std::string html((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(html.find("<h2>Detection</h2>"), std::string::npos);
  std::ofstream(dir / "results.json") << "{not json";
  r = epwa_test::run_cli("eval --report-only --out " + dir.string());
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("is not a results document"), std::string::npos) << r.out;
  fs::remove_all(dir);
  r = epwa_test::run_cli("eval --report-only --out " + dir.string());
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("not found"), std::string::npos) << r.out;
}

}  // namespace
