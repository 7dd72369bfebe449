// report.html renders in headless Chromium with every chart in the DOM (scripts/check_report.sh).
// Skipped where no chromium is installed (CI installs only scripts/setup.sh's packages).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "epwa/eval.hpp"
#include "synthetic_results.hpp"

namespace fs = std::filesystem;

namespace {
bool have_chromium() {
  for (const char* b : {"chromium", "chromium-browser", "google-chrome"})
    if (std::system((std::string("command -v ") + b + " >/dev/null 2>&1").c_str()) == 0)
      return true;
  return false;
}

int run_check(const fs::path& dir) {
  const std::string cmd = std::string("bash '") + EPWA_SOURCE_DIR + "/scripts/check_report.sh' '" +
                          dir.string() + "' > '" + (dir / "check.log").string() + "' 2>&1";
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
}  // namespace

TEST(ReportRender, EveryChartInTheChromiumDom) {
  if (!have_chromium()) GTEST_SKIP() << "chromium is not installed";
  const fs::path dir =
      fs::temp_directory_path() / ("epwa_report_render_" + std::to_string(getpid()));
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "report.html");
    f << epwa::eval::render_report(epwa::eval::testing::synthetic_results());
  }
  const int rc = run_check(dir);
  const std::string log = slurp(dir / "check.log");
  if (rc == 77) GTEST_SKIP() << log;
  EXPECT_EQ(rc, 0) << log;
  EXPECT_NE(log.find("ok: chart ppl-delta"), std::string::npos) << log;
  EXPECT_NE(log.find("ok: token view"), std::string::npos) << log;
  EXPECT_GT(fs::file_size(dir / "report.png"), 1000u);
  // The DOM is Chromium's serialization, not our file: the token view's classes are quoted.
  EXPECT_NE(slurp(dir / "report.dom.html").find("class=\"g\""), std::string::npos);
  fs::remove_all(dir);
}
