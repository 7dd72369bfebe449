// A small results.json with every section report.html draws (shared by the report tests).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace epwa::eval::testing {
inline nlohmann::json synthetic_results() {
  using json = nlohmann::json;
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
  for (std::string mode : {"gsg", "ewp"})
    for (double rate : {0.1, 0.2})
      r["attacks"].push_back({{"mode", mode},
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
}  // namespace epwa::eval::testing
