// `epwa demo` (the README's main job): its output format, and what its fixed seed and key must
// show: the watermarked text detected by the full and PEPI methods, the unwatermarked one by none.
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "support/run_cli.hpp"

namespace {

struct Row {
  int64_t green = -1, n = -1;
  double z = 0, p = -1;
  std::string detected;
};

std::string run_demo(int& code) {
  auto r = epwa_test::run_cli("demo --quiet", epwa_test::Stderr::Drop);
  code = r.code;
  return r.out;
}

TEST(Demo, TableAndDetections) {
  int code = 0;
  const std::string out = run_demo(code);
  ASSERT_EQ(code, 0) << out;
  std::istringstream in(out);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_GT(lines.size(), 10u) << out;
  EXPECT_EQ(lines[0].rfind("epwa demo: model ", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find("router hash"), std::string::npos) << lines[0];
  EXPECT_EQ(lines[1].rfind("watermark: GSG, gamma 0.5, delta 2", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("prompt: ", 0), 0u) << lines[2];

  std::map<std::pair<std::string, std::string>, Row> rows;
  bool header = false;
  for (const std::string& l : lines) {
    std::istringstream f(l);
    std::vector<std::string> w;
    for (std::string x; f >> x;) w.push_back(x);
    if (w == std::vector<std::string>{"text", "method", "green", "n", "z", "p-value", "detected"}) {
      header = true;
      continue;
    }
    if (!header || w.size() != 7 || (w[0] != "watermarked" && w[0] != "unwatermarked")) continue;
    Row r;
    size_t used = 0;
    r.green = std::stoll(w[2], &used);
    EXPECT_EQ(used, w[2].size()) << l;
    r.n = std::stoll(w[3], &used);
    EXPECT_EQ(used, w[3].size()) << l;
    r.z = std::stod(w[4], &used);
    EXPECT_EQ(used, w[4].size()) << l;
    r.p = std::stod(w[5], &used);
    EXPECT_EQ(used, w[5].size()) << l;
    r.detected = w[6];
    EXPECT_TRUE(r.detected == "yes" || r.detected == "no") << l;
    EXPECT_TRUE(r.green >= 0 && r.green <= r.n && r.n > 0) << l;
    EXPECT_TRUE(r.p >= 0 && r.p <= 1) << l;
    EXPECT_TRUE(rows.emplace(std::pair{w[0], w[1]}, r).second) << "duplicate row: " << l;
  }
  ASSERT_TRUE(header) << out;
  auto row = [&](const std::string& text, const std::string& method) -> Row& {
    return rows[{text, method}];
  };
  auto has = [&](const std::string& text, const std::string& method) {
    return rows.count({text, method});
  };
  for (const char* text : {"watermarked", "unwatermarked"})
    for (const char* method : {"full", "cspv", "pepi"})
      ASSERT_EQ(has(text, method), 1u) << "no row for " << text << " / " << method << "\n" << out;
  EXPECT_EQ(rows.size(), 6u) << out;
  // Properties of the demo's fixed seed and key (a failure here is a finding, not noise).
  EXPECT_EQ(row("watermarked", "full").detected, "yes") << out;
  EXPECT_EQ(row("watermarked", "pepi").detected, "yes") << out;
  for (const char* method : {"full", "cspv", "pepi"})
    EXPECT_EQ(row("unwatermarked", method).detected, "no") << method << "\n" << out;
  // The decision is z > 4, and the watermark raises z far above the unwatermarked text's.
  for (const auto& [key, r] : rows) {  // z is printed with two decimals
    if (r.detected == "yes")
      EXPECT_GE(r.z, 4.0) << key.first << " " << key.second;
    else
      EXPECT_LE(r.z, 4.005) << key.first << " " << key.second;
  }
  EXPECT_GT(row("watermarked", "full").z, row("unwatermarked", "full").z + 3.0);
  EXPECT_NE(out.find("watermarked:   "), std::string::npos);
  EXPECT_NE(out.find("unwatermarked: "), std::string::npos);
}

}  // namespace
