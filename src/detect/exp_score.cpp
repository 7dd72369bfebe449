// EXP-v1 detection (docs/SPEC.md 11): the first token after each distinct (expert, previous
// token) context adds -ln(1 - r) for the key's uniform r of that token (later ones were drawn
// freely: context masking); unwatermarked text gives Exp(1) terms, so the sum over n contexts is
// Gamma(n, 1) and its upper tail is the exact p-value.
#include <cmath>
#include <unordered_set>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"

namespace epwa {

DetectionResult Detector::score_exp(const DetectionInput& in, std::span<const RouterRecord> records,
                                    int64_t start, DetectionResult r) const {
  const GreenLists& gl = *lists_;
  const int64_t T = static_cast<int64_t>(in.tokens.size());
  const int32_t V = gl.vocab_size(), E = gl.num_experts();
  r.scheme = "exp";
  r.gamma = 0.5;
  std::unordered_set<uint64_t> seen;
  std::vector<TokenDetail> detail;
  for (int64_t t = start; t < T; ++t) {
    const int32_t tok = in.tokens[static_cast<size_t>(t)];
    const int32_t prev = in.tokens[static_cast<size_t>(t - 1)];
    const RouterRecord& rec = records[static_cast<size_t>(t - 1)];
    if (tok < 0 || tok >= V || prev < 0 || prev >= V)
      throw Error("detect: a token near position " + std::to_string(t) +
                  " is outside the vocabulary of " + std::to_string(V));
    if (rec.expert < 0 || rec.expert >= E)
      throw Error("detect: router record of position " + std::to_string(t - 1) + " names expert " +
                  std::to_string(rec.expert) + " of " + std::to_string(E));
    const double u = GreenLists::exp_uniform(gl.exp_seed(rec.expert, prev), tok);
    const uint64_t context =
        static_cast<uint64_t>(rec.expert) * static_cast<uint64_t>(V) + static_cast<uint64_t>(prev);
    const bool repeat = !opt_.count_repeats && !seen.insert(context).second;
    if (repeat) {
      ++r.repeats_skipped;
    } else {
      r.score += -std::log1p(-u);
      ++r.n;
      r.g += u > 0.5;
    }
    if (opt_.tokens_detail)
      detail.push_back({t, tok, rec.expert, rec.confidence, u > 0.5, !repeat, ""});
  }
  r.candidates = r.n;
  const double n = static_cast<double>(r.n);
  const double lp = r.n > 0 ? gamma_log_sf(r.n, r.score) : 0.0;
  r.p_value = std::exp(lp);
  r.log10_p = lp / std::log(10.0);
  // z: the normal z-score with the same p-value, so that z > threshold is the green scheme's
  // level; plain_z: the normal approximation (S - n) / sqrt(n), for comparison.
  r.z = normal_isf_log(lp);
  r.plain_z = r.n > 0 ? (r.score - n) / std::sqrt(n) : 0.0;
  if (r.n < 10) {
    r.detected = false;
    r.reason = "too short";
  } else {
    r.detected = r.z > r.threshold;
    r.reason = r.detected ? "z above threshold" : "z not above threshold";
  }
  if (opt_.tokens_detail) r.tokens = std::move(detail);
  return r;
}

}  // namespace epwa
