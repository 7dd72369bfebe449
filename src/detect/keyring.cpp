// Detection with a keyring: test every key on the same tokens, report the best, correct for m.
#include <cmath>
#include <nlohmann/json.hpp>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"

namespace epwa {

double keyring_threshold(double threshold, int32_t m) {
  check(m >= 1, "keyring: needs at least one key");
  check(std::isfinite(threshold), "keyring: the threshold must be finite");
  if (m == 1) return threshold;
  // Solve ln P[Z > z] = ln P[Z > threshold] - ln m by bisection (the tail is monotone).
  const double target = normal_log_sf(threshold) - std::log(static_cast<double>(m));
  double lo = threshold, hi = threshold + 40.0;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (normal_log_sf(mid) > target ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

KeyringDetector::KeyringDetector(std::vector<std::string> ids,
                                 std::vector<std::shared_ptr<const GreenLists>> lists,
                                 DetectOptions opt)
    : ids_(std::move(ids)), opt_(opt) {
  check(!ids_.empty(), "keyring detector: no keys");
  check(ids_.size() == lists.size(), "keyring detector: " + std::to_string(ids_.size()) +
                                         " ids for " + std::to_string(lists.size()) + " lists");
  DetectOptions each = opt_;
  if (each.method == DetectMethod::Pepi) each.method = DetectMethod::Full;
  for (const auto& l : lists) {
    check(l != nullptr, "keyring detector: no green lists");
    check(l->vocab_size() == lists[0]->vocab_size() &&
              l->num_experts() == lists[0]->num_experts() && l->gamma() == lists[0]->gamma() &&
              l->router_hash() == lists[0]->router_hash(),
          "keyring detector: the keys' green lists are of different models or gammas");
    detectors_.emplace_back(l, each);
  }
}

void KeyringDetector::set_expert_predictor(std::shared_ptr<ExpertPredictor> predictor) {
  predictor_ = std::move(predictor);
}

void KeyringDetector::set_parallel_for(ParallelFor parallel_for) {
  parallel_for_ = std::move(parallel_for);
}

KeyringResult KeyringDetector::detect(const DetectionInput& in) const {
  DetectionInput x = in;
  std::vector<RouterRecord> predicted;
  if (opt_.method == DetectMethod::Pepi) {
    check(predictor_ != nullptr, "detect: method pepi needs an expert predictor");
    predicted = predictor_->predict(in.tokens, in.prompt_tokens);
    x.records = predicted;
  }
  KeyringResult r;
  r.keys = static_cast<int32_t>(ids_.size());
  r.z_threshold = keyring_threshold(opt_.threshold, r.keys);
  std::vector<DetectionResult> each(detectors_.size());
  const auto score = [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k)
      each[static_cast<size_t>(k)] = detectors_[static_cast<size_t>(k)].detect(x);
  };
  if (parallel_for_)
    parallel_for_(static_cast<int64_t>(each.size()), score);
  else
    score(0, static_cast<int64_t>(each.size()));
  size_t best = 0;
  for (size_t k = 0; k < detectors_.size(); ++k) {
    DetectionResult& d = each[k];
    r.per_key.push_back({ids_[k], d.g, d.z, d.p_value, d.log10_p});
    // The decision statistic picks the key (ties: the first): max z > z_m is "some key fires".
    // With GL-v1 every key has the same n, so this is also the smallest p; with CTX-v1 the keyed
    // buckets, and so the dedup, differ by key and n may differ a little.
    if (k == 0 || d.z > r.best.z) {
      best = k;
      r.best = std::move(d);
    }
  }
  r.key_id = ids_[best];
  r.best.method = detect_method_name(opt_.method);
  const double log10_m = std::log10(static_cast<double>(r.keys));
  r.log10_p_corrected = std::min(0.0, r.best.log10_p + log10_m);
  r.p_corrected = std::pow(10.0, r.log10_p_corrected);
  if (r.best.n >= 10) {
    r.best.detected = r.best.z > r.z_threshold;
    r.best.reason =
        r.best.detected ? "z above corrected threshold" : "z not above corrected threshold";
  }
  return r;
}

nlohmann::json to_json(const KeyringResult& r) {
  auto finite_or_null = [](double v) {
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
  };
  nlohmann::json j = to_json(r.best);
  nlohmann::json keys = nlohmann::json::array();
  for (const KeyScore& k : r.per_key)
    keys.push_back({{"id", k.id},
                    {"g", k.g},
                    {"z", finite_or_null(k.z)},
                    {"p_value", k.p_value},
                    {"log10_p", finite_or_null(k.log10_p)}});
  j["keyring"] = {{"keys", r.keys},
                  {"key_id", r.key_id},
                  {"correction", "bonferroni"},
                  {"z_threshold", r.z_threshold},
                  {"p_raw", r.best.p_value},
                  {"p_corrected", r.p_corrected},
                  {"log10_p_corrected", finite_or_null(r.log10_p_corrected)},
                  {"per_key", std::move(keys)}};
  return j;
}

}  // namespace epwa
