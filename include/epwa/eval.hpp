// Evaluation of the EPW-A watermark (issue 8, docs/EVAL.md): detection metrics with bootstrap
// confidence intervals, text quality metrics, token-level attacks, the HTML report and the whole
// `epwa eval` pipeline.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

namespace epwa {
class Model;
class Tokenizer;
}  // namespace epwa

namespace epwa::eval {

// ---- detection metrics: positives (watermarked) and negatives (human / unwatermarked) scores ----
// A text counts as detected when its score is strictly above the threshold (as Detector does).

// Area under the ROC curve = P[pos > neg] + 0.5 P[pos == neg] (Mann-Whitney, ties count half).
// Throws Error when either side is empty.
double roc_auc(std::span<const double> pos, std::span<const double> neg);

struct RocPoint {
  double threshold = 0, fpr = 0, tpr = 0;
};
// The ROC curve: (0,0), one point per distinct score (descending), (1,1).
std::vector<RocPoint> roc_curve(std::span<const double> pos, std::span<const double> neg);

// Fraction of scores > threshold (0 for an empty span).
double rate_above(std::span<const double> scores, double threshold);
// The smallest threshold (a negative's score, or -inf) such that at most floor(fpr * |neg|)
// negatives score above it: the empirical threshold for a target false-positive rate.
double threshold_at_fpr(std::span<const double> neg, double fpr);
// TPR at that empirical threshold.
double tpr_at_fpr(std::span<const double> pos, std::span<const double> neg, double fpr);

double mean(std::span<const double> v);    // 0 for empty
double median(std::span<const double> v);  // middle value, mean of the two middle ones if even

struct Interval {
  double lo = 0, hi = 0;
};
// Percentile bootstrap (B resamples with replacement, seeded SplitMix64; level e.g. 0.95) of a
// statistic of one sample or of a (pos, neg) pair resampled independently.
Interval bootstrap_ci(std::span<const double> v,
                      const std::function<double(std::span<const double>)>& stat, int32_t resamples,
                      uint64_t seed, double level = 0.95);
Interval bootstrap_ci2(
    std::span<const double> pos, std::span<const double> neg,
    const std::function<double(std::span<const double>, std::span<const double>)>& stat,
    int32_t resamples, uint64_t seed, double level = 0.95);

// ---- quality metrics ----
// Distinct n-grams / n-grams of one text (0 when shorter than n); n >= 1.
double distinct_n(std::span<const int32_t> tokens, int32_t n);
// exp(mean negative log-likelihood in nats); throws Error on an empty span.
double perplexity_from_nll(std::span<const double> nll);
// Per-token negative log-likelihoods of tokens[start..] given everything before, one forward pass
// (tokens[0] is the BOS; start >= 1).
std::vector<double> token_nll(Model& model, std::span<const int32_t> tokens, int64_t start);

// ---- attacks on token ids (the text is edited as tokens, not re-tokenized) ----
// SplitMix64, also used for the bootstrap.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next();
  uint64_t below(uint64_t n);  // uniform in [0, n), no modulo bias; n > 0
  double uniform();            // [0, 1)

 private:
  uint64_t s_;
};

// Where replacement / inserted tokens come from.
struct TokenSource {
  int32_t first = 0, last = 0;  // vocabulary: uniform in [first, last)
  // model: candidates[i] = the model's top-k next tokens at text position i (predicting token i);
  // used instead of the vocabulary when non-empty (one list per text position).
  std::vector<std::vector<int32_t>> candidates;
};

enum class AttackKind { Substitute, Delete, Insert };
std::string attack_name(AttackKind k);  // "substitute", "delete", "insert"

// Number of edits an attack at `rate` makes on n tokens: round(rate * n).
int64_t attack_edits(size_t n, double rate);
// Substitution replaces exactly attack_edits() distinct positions by a different token; deletion
// removes exactly that many positions; insertion adds that many tokens (each before a distinct
// original position). Throws Error on rate outside [0, 1] or an empty vocabulary source.
std::vector<int32_t> attack(std::span<const int32_t> text, AttackKind kind, double rate,
                            const TokenSource& source, uint64_t seed);
// Span cropping: a `window`-token slice of `marked` (start drawn from seed) placed between the
// first and second half of `human`. Returns the new text and the slice's start offset in it.
struct Spliced {
  std::vector<int32_t> tokens;
  size_t window_start = 0, window_size = 0;
};
Spliced splice_window(std::span<const int32_t> marked, std::span<const int32_t> human,
                      size_t window, uint64_t seed);

// ---- report ----
// Writes a self-contained HTML page (inline SVG, no script or network) from results.json's
// content. Charts: "roc", "zhist", "attacks", "ppl-delta"; token view: "tokens".
std::string render_report(const nlohmann::json& results);

// ---- the strength/quality frontier (docs/EVAL.md "Frontier") ----
struct FrontierSetting {
  std::string mode = "gsg";  // "gsg", "ewp" or "exp"
  double delta = 2.0;        // unused by exp
};
// Parses a comma-separated list such as "gsg:1.5,ewp:2,exp". Throws Error naming a bad item.
std::vector<FrontierSetting> parse_frontier(const std::string& spec);

// ---- the pipeline ----
struct EvalOptions {
  std::filesystem::path model_path;  // HF folder or GGUF
  std::string key = "epwa-eval";
  // Defences against watermark stealing (docs/THREAT_MODEL.md). keys > 1: a keyring of that many
  // keys derived from `key` (derived_keys: key#0, key#1, ...), each watermarked text under the key
  // KR-v1 picks from its seed and prompt, every text detected over the whole keyring and scored
  // as the best key's z minus z_m - 4 (z_m: keyring_threshold), so that z > 4 is the keyring
  // detector's Bonferroni-corrected decision. context_buckets H > 0: CTX-v1's lists (expert x
  // bucket of the previous token); 0 = GL-v1.
  int32_t keys = 1;
  int32_t context_buckets = 0;
  std::filesystem::path prompts, human;  // one prompt / one passage a line
  int32_t n = 20;                        // texts per mode, unwatermarked texts
  int32_t n_human = -1;                  // human passages (-1 = n)
  int32_t tokens = 200;                  // new tokens per text
  double gamma = 0.5, delta = 2.0;
  std::vector<double> delta_grid;  // extra GSG deltas for the perplexity-vs-delta chart
  float temperature = 0.8f, top_p = 0.95f;
  uint64_t seed = 1;
  int32_t cspv_sample = 64;
  int32_t top_k_attack = 20;  // model top-k for fluent attacks
  std::vector<double> attack_rates = {0.05, 0.1, 0.2, 0.3};
  int32_t attack_texts = -1;  // positives attacked per mode (-1 = n)
  int32_t crop_window = 50;
  int32_t bootstrap = 1000;
  bool cross_precision = true;  // needs the load-modes API
  int32_t cross_texts = -1;     // GSG texts regenerated / detected per precision (-1 = n)
  int32_t delta_texts = -1;     // texts per extra delta of delta_grid (-1 = n)
  // PEPI oracle (epwa train-oracle); empty = PEPI skipped. Distributions come from the loaded
  // model (top-k as the oracle was trained), i.e. the local model simulates the API.
  std::filesystem::path oracle;
  // Also the distortion-free exp mode (EXP-v1): its texts (same prompts and seeds), quality and
  // detection (scheme exp, method full) against the same negatives; no attacks yet.
  bool exp = false;
  // The frontier: when non-empty, eval measures only these settings, each generated once at
  // `tokens` and detected at every one of frontier_lengths (each <= tokens) against the same
  // negatives. frontier_entropy > 0 adds to each GSG/EWP setting entropy-aware detection of the
  // same texts and selective bias (new texts) at that threshold (nats).
  std::vector<FrontierSetting> frontier;
  std::vector<int32_t> frontier_lengths = {50, 100, 200, 400};
  double frontier_entropy = 0;
  // Robustness of each frontier row: its first frontier_attacks texts cut to min(200, tokens)
  // tokens under substitution (vocabulary and top-k), deletion at attack_rates, and regenerated by
  // a 4-bit load (unless cross_precision is off). 0 = not measured.
  int32_t frontier_attacks = 0;
  std::string commit;                                // recorded in results.json
  std::function<void(const std::string&)> progress;  // progress lines (stderr in the CLI)
  // Called with the results gathered so far after each phase (detection, attacks, delta grid),
  // so that a long run that is cut off still leaves its finished parts.
  std::function<void(const nlohmann::json&)> checkpoint;
};

// Runs everything and returns results.json's content (see docs/EVAL.md for the layout).
nlohmann::json run_eval(const EvalOptions& o);
// Runs the pipeline and writes DIR/results.json and DIR/report.html; while it runs,
// DIR/results.partial.json holds the phases finished so far (removed at the end).
nlohmann::json run_eval_to_dir(const EvalOptions& o, const std::filesystem::path& dir);

}  // namespace epwa::eval
