// report.html: all charts present, self-contained, text escaped.
#include <gtest/gtest.h>

#include <string>

#include "epwa/eval.hpp"
#include "synthetic_results.hpp"

using json = nlohmann::json;
using namespace epwa::eval;

json synthetic() {
  return epwa::eval::testing::synthetic_results();
}

TEST(Report, HasEveryChartAndTheTokenView) {
  const std::string h = render_report(synthetic());
  for (const char* id : {"id=\"roc-gsg\"", "id=\"roc-ewp\"", "id=\"zhist-gsg\"", "id=\"zhist-ewp\"",
                         "id=\"attacks-gsg\"", "id=\"ppl-delta\"", "id=\"tokens\""})
    EXPECT_NE(h.find(id), std::string::npos) << id;
  EXPECT_NE(h.find("<polyline class=\"series\""), std::string::npos);
  EXPECT_NE(h.find("<rect class=\"bar\""), std::string::npos);
  EXPECT_NE(h.find("<span class=g"), std::string::npos);
  EXPECT_NE(h.find("<span class=r"), std::string::npos);
  EXPECT_NE(h.find("<span class=u"), std::string::npos);
  EXPECT_NE(h.find(" a&lt;b&gt;"), std::string::npos);  // token text escaped
  EXPECT_EQ(h.find("<b>\""), std::string::npos);
  // offline: no script, no external resource
  EXPECT_EQ(h.find("<script"), std::string::npos);
  EXPECT_EQ(h.find("src="), std::string::npos);
  EXPECT_EQ(h.find("href="), std::string::npos);
  EXPECT_EQ(h.rfind("</html>"), h.size() - 8);
}

TEST(Report, SurvivesMissingSections) {
  const std::string h = render_report(json::object());
  EXPECT_NE(h.find("</html>"), std::string::npos);
  EXPECT_EQ(h.find("id=\"tokens\""), std::string::npos);
}

// A run with the stealing defences says so above its tables; a plain run does not.
TEST(Report, NamesTheDefences) {
  auto r = epwa::eval::testing::synthetic_results();
  EXPECT_EQ(render_report(r).find("id=\"defences\""), std::string::npos);
  r["params"]["keys"] = 16;
  r["params"]["context_buckets"] = 256;
  r["params"]["z_correction"] = 0.6135;
  const std::string h = render_report(r);
  EXPECT_NE(h.find("a keyring of 16 keys"), std::string::npos);
  EXPECT_NE(h.find("minus 0.614"), std::string::npos);
  EXPECT_NE(h.find("256 buckets"), std::string::npos);
}
