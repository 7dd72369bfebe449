// report.html: all charts present, self-contained, text escaped.
#include <gtest/gtest.h>

#include <string>

#include "epwa/eval.hpp"

using json = nlohmann::json;
using namespace epwa::eval;

namespace {
json synthetic() {
  json r;
  r["model"] = {{"path", "m"}, {"router_hash", "abc"}, {"watermark_layer", 5}};
  r["params"] = {{"gamma", 0.5}, {"delta", 2.0}, {"n", 3}, {"tokens", 10}};
  r["detection"] = json::array();
  for (std::string mode : {"gsg", "ewp"})
    for (std::string method : {"full", "cspv", "weighted"})
      for (bool prompt : {true, false})
        r["detection"].push_back({{"mode", mode},
                                  {"method", method},
                                  {"prompt", prompt},
                                  {"repeats", false},
                                  {"n_pos", 2},
                                  {"n_neg", 2},
                                  {"tpr_z4", 0.5},
                                  {"tpr_z4_ci", {0.0, 1.0}},
                                  {"fpr_z4", 0.0},
                                  {"auc", 0.75},
                                  {"z_pos", {5.0, 3.0}},
                                  {"z_neg", {0.1, -1.0}},
                                  {"roc", {{0.0, 0.0}, {0.0, 0.5}, {0.5, 1.0}, {1.0, 1.0}}}});
  r["attacks"] = json::array();
  for (double rate : {0.1, 0.2})
    r["attacks"].push_back({{"mode", "gsg"},
                            {"source", "topk"},
                            {"attack", "substitute"},
                            {"rate", rate},
                            {"prompt", true},
                            {"method", "full"},
                            {"n", 2},
                            {"tpr_z4", 0.5},
                            {"z_mean", 3.0}});
  r["delta_grid"] = {{{"mode", "none"}, {"delta", 0.0}, {"ppl_mean", 5.0}},
                     {{"mode", "gsg"}, {"delta", 2.0}, {"ppl_mean", 6.0}}};
  r["quality"] = {{"gsg", {{"texts", 2}, {"ppl_mean", 6.0}}}};
  r["sample"] = {{"prompt", "Once"},
                 {"z", 4.5},
                 {"g", 1},
                 {"n", 2},
                 {"tokens",
                  {{{"text", " a<b>"}, {"green", true}, {"scored", true}, {"expert", 1}},
                   {{"text", " c"}, {"green", false}, {"scored", true}, {"expert", 2}},
                   {{"text", " d"}, {"green", true}, {"scored", false}, {"expert", 2}}}}};
  return r;
}
}  // namespace

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
