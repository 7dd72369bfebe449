// Gray-box detection of the EPW-A watermark (docs/SPEC.md): given the token ids of a sequence and
// the router decision at the watermark layer for every position, count green hits and test them.
// The router records come from a teacher-forced pass (full / cspv / weighted) or, for the
// black-box PEPI method, from an ExpertPredictor.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "epwa/watermark.hpp"

namespace epwa {

// The router decision at the watermark layer for one position: top-1 expert and its confidence.
using RouterRecord = ExpertChoice;

// Records from a positions x E row-major matrix of router logits (one row per position).
std::vector<RouterRecord> records_from_logits(std::span<const float> logits, int32_t num_experts);

enum class DetectMethod { Full, Cspv, Weighted, Pepi };
std::string_view detect_method_name(DetectMethod m);          // "full", "cspv", "weighted", "pepi"
DetectMethod detect_method_from_name(std::string_view name);  // throws Error on an unknown name

// What is scored: green-list hits (GSG, EWP: GL-v1 / CTX-v1) or the keyed uniforms of the
// distortion-free exp mode (EXP-v1, docs/SPEC.md 11).
enum class DetectScheme { Green, Exp };
std::string_view detect_scheme_name(DetectScheme s);          // "green", "exp"
DetectScheme detect_scheme_from_name(std::string_view name);  // throws Error on an unknown name
DetectScheme detect_scheme_for(WatermarkMode mode);  // what text written in that mode is scored by

struct DetectOptions {
  DetectMethod method = DetectMethod::Full;
  DetectScheme scheme = DetectScheme::Green;  // exp: methods full and pepi only
  double threshold = 4.0;                     // detected = z > threshold
  bool count_repeats = false;                 // false: each (expert, token) pair is scored once
  int64_t sample = 0;                         // CSPV: number N of tokens to score (> 0)
  bool tokens_detail = false;                 // fill DetectionResult::tokens
  // Entropy-aware detection (docs/SPEC.md "Entropy threshold"): only tokens whose next-token
  // distribution had at least this entropy (nats) are scored; the input then carries entropies.
  double min_entropy = 0.0;
};

struct DetectionInput {
  std::span<const int32_t> tokens;  // the whole sequence: [BOS] [prompt] text
  int64_t prompt_tokens = 0;        // leading tokens that are context only (BOS included)
  // records[p] = router decision at position p; token t is governed by records[t - 1]. At least
  // tokens.size() - 1 entries (a last extra one is ignored). Unused by the PEPI method.
  std::span<const RouterRecord> records;
  // With DetectOptions::min_entropy > 0: entropy[p] = the entropy of the model's distribution at
  // position p (over token p + 1), at least tokens.size() - 1 entries.
  std::span<const float> entropy{};
};

// The PEPI extension point: predicts the expert choices of a sequence without the model's router.
class ExpertPredictor {
 public:
  virtual ~ExpertPredictor() = default;
  // Returns records for positions 0 .. tokens.size() - 2 at least (same indexing as
  // DetectionInput::records).
  virtual std::vector<RouterRecord> predict(std::span<const int32_t> tokens,
                                            int64_t prompt_tokens) = 0;
};

struct TokenDetail {
  int64_t position = 0;
  int32_t token = 0;
  int32_t expert = 0;
  float confidence = 0.0f;
  bool green = false;
  bool scored = false;  // false: a repeat (dedup) or not sampled (CSPV)
  std::string stratum;  // CSPV: "low", "high", "random"; empty otherwise
};

struct StratumCount {
  std::string name;
  int64_t hits = 0;
  int64_t n = 0;
};

struct DetectionResult {
  std::string method;
  std::string scheme = "green";
  double score =
      0.0;         // exp: S = sum of -ln(1 - r) over the scored tokens (Gamma(n, 1) if unmarked)
  int64_t g = 0;   // green hits among the scored tokens
  int64_t n = 0;   // scored tokens
  double z = 0.0;  // the method's statistic (z_w for weighted)
  double p_value = 1.0;  // exact binomial P[X >= g] (normal tail of z_w for weighted)
  double log10_p = 0.0;  // log10 of p_value, finite where p_value underflows
  double plain_z = 0.0;  // the plain z-test over the scored tokens, for comparison
  bool detected = false;
  std::string reason;  // "too short", "z above threshold", "z not above threshold"
  double threshold = 4.0;
  double gamma = 0.5;
  int64_t candidates = 0;           // generated tokens left after dedup (before CSPV sampling)
  int64_t repeats_skipped = 0;      // generated tokens dropped as repeated (expert, token) pairs
  int64_t low_entropy_skipped = 0;  // generated tokens below DetectOptions::min_entropy
  double min_entropy = 0.0;
  std::vector<StratumCount> strata;  // CSPV: low, high, random
  std::vector<TokenDetail> tokens;   // every generated position, when tokens_detail is set
};

nlohmann::json to_json(const DetectionResult& r);

class Detector {
 public:
  // Throws Error on null lists, a CSPV method without sample > 0, or a non-finite threshold.
  explicit Detector(std::shared_ptr<const GreenLists> lists, DetectOptions opt = {});

  // Throws Error when records are missing or out of range, or a token is outside the vocabulary.
  DetectionResult detect(const DetectionInput& in) const;

  // PEPI: the predictor supplies the records; detect() with method Pepi throws until one is set.
  void set_expert_predictor(std::shared_ptr<ExpertPredictor> predictor);

  const DetectOptions& options() const { return opt_; }
  const GreenLists& lists() const { return *lists_; }

 private:
  DetectionResult score_exp(const DetectionInput& in, std::span<const RouterRecord> records,
                            int64_t start, DetectionResult r) const;
  // The verdict of both schemes: n >= 10 and z > threshold.
  static void decide(DetectionResult& r);
  std::shared_ptr<const GreenLists> lists_;
  DetectOptions opt_;
  std::shared_ptr<ExpertPredictor> predictor_;
};

// Detection with a keyring of m keys (docs/SPEC.md section 9): every key is tested on the same
// tokens and the key with the largest statistic is the one reported (with GL-v1 the dedup does not
// depend on the key, so n is the same for all and that key has the smallest p-value). The decision
// is Bonferroni-corrected: detected = n >= 10 and z > z_m, z_m = keyring_threshold(threshold, m),
// i.e. m * P[Z > z] < P[Z > threshold]; m = 1 is exactly the one-key rule. The corrected p-value
// min(1, m * p_min) bounds the probability that any of the m keys fires by chance whatever the
// dependence between the keys' statistics, so the null stays valid.
struct KeyScore {
  std::string id;
  int64_t g = 0;
  double z = 0, p_value = 1, log10_p = 0;
};
struct KeyringResult {
  DetectionResult best;           // the result of the key with the smallest p-value (detected and
                                  // reason follow the corrected rule)
  std::string key_id;             // that key
  int32_t keys = 1;               // m
  double z_threshold = 4.0;       // z_m
  double p_corrected = 1.0;       // min(1, m * best.p_value)
  double log10_p_corrected = 0;   // finite where p underflows
  std::vector<KeyScore> per_key;  // every key, in keyring order
};
nlohmann::json to_json(const KeyringResult& r);

// z_m with m * P[Z > z_m] = P[Z > threshold] (standard normal Z). Throws Error when m < 1.
double keyring_threshold(double threshold, int32_t m);

class KeyringDetector {
 public:
  // One id per list, in keyring order; all lists of one model and gamma. Throws Error on no keys,
  // a count mismatch, lists that differ in vocabulary, experts or gamma, or bad options.
  KeyringDetector(std::vector<std::string> ids,
                  std::vector<std::shared_ptr<const GreenLists>> lists, DetectOptions opt = {});
  // As Detector::detect; PEPI predicts the records once for all keys.
  KeyringResult detect(const DetectionInput& in) const;
  void set_expert_predictor(std::shared_ptr<ExpertPredictor> predictor);
  // Scores the keys through `parallel_for(n, fn)` (fn(begin, end) over disjoint ranges covering
  // [0, n)), e.g. a thread pool's: each key's first use of a list makes it (a keyed shuffle of the
  // vocabulary), so detection's time grows with the keys. The result is the serial one.
  using ParallelFor = std::function<void(int64_t, const std::function<void(int64_t, int64_t)>&)>;
  void set_parallel_for(ParallelFor parallel_for);
  const DetectOptions& options() const { return opt_; }
  size_t size() const { return ids_.size(); }

 private:
  std::vector<std::string> ids_;
  std::vector<Detector> detectors_;  // method pepi runs as full over the predicted records
  DetectOptions opt_;
  std::shared_ptr<ExpertPredictor> predictor_;
  ParallelFor parallel_for_;
};

// --- statistics, exposed for tests, benchmarks and the evaluation ---
// z = (g - gamma n) / sqrt(n gamma (1 - gamma)); 0 when n = 0.
double z_score(int64_t g, int64_t n, double gamma);
// ln P[X >= g] for X ~ Binomial(n, p), summed in log space (exact to ~1e-9 relative for n <= 1e7).
double binomial_log_sf(int64_t g, int64_t n, double p);
// ln P[Z > z] for a standard normal Z, accurate in the far tail.
double normal_log_sf(double z);
// log P[S >= s] for S ~ Gamma(n, 1), n >= 1 (= log P[Poisson(s) <= n - 1], summed exactly).
double gamma_log_sf(int64_t n, double s);
// The z with log P[Z > z] = log_p (standard normal Z): a p-value as the z-score that gives it.
double normal_isf_log(double log_p);
// CSPV: the seed derived from the token ids and the indices (into `confidences`) of the N sampled
// tokens, each with its stratum (0 low, 1 high, 2 random), in the order low, high, random.
uint64_t cspv_seed(std::span<const int32_t> tokens);
struct CspvPick {
  size_t index = 0;
  int32_t stratum = 0;
};
std::vector<CspvPick> cspv_sample(std::span<const float> confidences, int64_t n, uint64_t seed);

}  // namespace epwa
