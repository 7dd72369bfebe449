// JSON form of a detection result (the CLI's --json output).
#include <cmath>
#include <nlohmann/json.hpp>

#include "epwa/detect.hpp"

namespace epwa {

nlohmann::json to_json(const DetectionResult& r) {
  // JSON has no infinity: an underflowed log10 p is reported as null.
  auto finite_or_null = [](double v) {
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
  };
  nlohmann::json j = {
      {"method", r.method},
      {"g", r.g},
      {"n", r.n},
      {"z", finite_or_null(r.z)},
      {"p_value", r.p_value},
      {"log10_p", finite_or_null(r.log10_p)},
      // g / n, as transformers' WatermarkDetector reports it; null when no token was scored.
      {"green_fraction",
       r.n > 0 ? nlohmann::json(static_cast<double>(r.g) / r.n) : nlohmann::json()},
      {"plain_z", finite_or_null(r.plain_z)},
      {"detected", r.detected},
      {"reason", r.reason},
      {"threshold", r.threshold},
      {"gamma", r.gamma},
      {"candidates", r.candidates},
      {"repeats_skipped", r.repeats_skipped},
  };
  if (r.scheme != "green") {  // exp: its score (green_fraction is the share with r > 1/2)
    j["scheme"] = r.scheme;
    j["score"] = r.score;
  }
  if (r.min_entropy > 0) {  // entropy-aware detection (absent otherwise: outputs unchanged)
    j["min_entropy"] = r.min_entropy;
    j["low_entropy_skipped"] = r.low_entropy_skipped;
  }
  if (!r.strata.empty()) {
    nlohmann::json s = nlohmann::json::object();
    for (const StratumCount& c : r.strata) s[c.name] = {{"hits", c.hits}, {"n", c.n}};
    j["strata"] = std::move(s);
  }
  if (!r.tokens.empty()) {
    nlohmann::json t = nlohmann::json::array();
    for (const TokenDetail& d : r.tokens) {
      nlohmann::json e = {{"position", d.position},     {"token", d.token}, {"expert", d.expert},
                          {"confidence", d.confidence}, {"green", d.green}, {"scored", d.scored}};
      if (!d.stratum.empty()) e["stratum"] = d.stratum;
      t.push_back(std::move(e));
    }
    j["tokens"] = std::move(t);
  }
  return j;
}

}  // namespace epwa
