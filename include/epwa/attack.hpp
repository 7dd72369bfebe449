// Watermark stealing (issue 22, docs/THREAT_MODEL.md): an attacker who sees watermarked text and
// runs the public model without the key learns per-context green scores (the estimator idea of
// Jovanovic et al., "Watermark stealing in large language models", ICML 2024), then spoofs
// (writes text the real key detects) or scrubs (edits watermarked text until it is not detected).
// The same harness runs against a KGW-style baseline keyed by the previous token, so the effect of
// EPW-A's few (E) green lists is measured rather than argued.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "epwa/detect.hpp"
#include "epwa/generate.hpp"
#include "epwa/model.hpp"
#include "epwa/observe.hpp"
#include "epwa/watermark.hpp"

namespace epwa {
class Oracle;
class Tokenizer;
}  // namespace epwa

namespace epwa::attack {

// What a green list is keyed by. EPW-A: the top-1 expert at the watermark layer of the previous
// position (E contexts). KGW baseline: the previous token (V contexts). EPW-A with CTX-v1 context
// buckets (defence 1, docs/SPEC.md section 10): the expert and a keyed bucket of the previous
// token (E x H lists); the attacker, who cannot compute the keyed buckets, keys by the expert and
// the previous token itself (E x V contexts, context = expert * V + token).
enum class Scheme { Epwa, Kgw, EpwaCtx };
std::string_view scheme_name(Scheme s);          // "epwa", "kgw", "epwa-ctx"
Scheme scheme_from_name(std::string_view name);  // throws Error on an unknown name

// The KGW-style baseline's green lists, a baseline and not part of EPW-A: GL-v1 (docs/SPEC.md,
// section 2) with the previous token h in place of the expert and the key bytes prefixed with
// "KGW-BASELINE:", i.e. k_h = HMAC("KGW-BASELINE:" || K, decimal(h) ":" router_hash). V lists,
// each built on first use.
std::shared_ptr<const GreenLists> make_kgw_green_lists(const Model& model, std::string_view key,
                                                       double gamma);

// How the attacker learns the expert behind a position. Gray-box (oracle null): the top-1 expert
// of the public model's router at the watermark layer. Black-box: a PEPI oracle's prediction from
// the position's next-token distribution (what an API with log-probabilities shows) and the
// tokens so far (docs/PEPI.md); the model's weights then serve only as that API.
// The oracle's guess from a row of raw logits after `history` (its last token the position's):
int32_t oracle_expert(const Oracle& oracle, std::span<const float> logits,
                      std::span<const int32_t> history);
// Throws Error when the oracle was trained on another model or another watermark layer.
void check_oracle(const Oracle& oracle, const Model& model, int32_t layer);

// The attacker's context of a position from its expert and token: EPW-A the expert, KGW the token,
// epwa-ctx the pair (expert * vocab + token: the buckets are keyed, so the attacker keeps the
// token).
int32_t context_id(Scheme scheme, int32_t expert, int32_t token, int32_t vocab);

// The context of the next token while a sequence is being run: records the top-1 expert of the
// latest router observation at the watermark layer (EPW-A; with an oracle, its guess from the
// logits seen) or the latest token pushed (KGW).
class ContextTracker : public RouterObserver {
 public:
  // `vocab` is needed by EpwaCtx only (its contexts are expert * vocab + token).
  ContextTracker(Scheme scheme, int32_t layer, int32_t vocab = 0, const Oracle* oracle = nullptr)
      : scheme_(scheme), layer_(layer), vocab_(vocab), oracle_(oracle) {}
  void reset() {
    expert_ = -1;
    token_ = -1;
    history_.clear();
  }
  void observe(const RouterObservation& obs) override;
  void push(int32_t token);  // a token entered the sequence (the KGW context)
  // The raw logits after the last token pushed (the oracle's input; ignored without one).
  void see(std::span<const float> logits);
  int32_t context() const;  // throws Error before any observation / token
  Scheme scheme() const { return scheme_; }
  int32_t layer() const { return layer_; }

 private:
  Scheme scheme_;
  int32_t layer_, vocab_;
  const Oracle* oracle_;
  int32_t expert_ = -1, token_ = -1;
  std::vector<int32_t> history_;  // the last tokens pushed (the oracle's context features)
};

// The context of every position of `tokens` from a teacher-forced pass: contexts[p] governs
// token p + 1 (EPW-A: router_records at `layer`, or the oracle's guesses; KGW: the tokens).
std::vector<int32_t> contexts_of(Model& model, Scheme scheme, std::span<const int32_t> tokens,
                                 int32_t layer, const Oracle* oracle = nullptr);

// Adds bias(context, logits) to each step's raw logits; the context is tracked as above.
class ContextBias : public LogitsProcessor {
 public:
  using Bias = std::function<void(int32_t context, std::span<float> logits)>;
  ContextBias(Scheme scheme, int32_t layer, Bias bias, int32_t vocab = 0,
              const Oracle* oracle = nullptr)
      : tracker_(scheme, layer, vocab, oracle), bias_(std::move(bias)) {}
  void process(std::span<float> logits) override {
    if (!following_) tracker_.see(logits);
    bias_(tracker_.context(), logits);
  }
  // generate() with this bias: the tracker sees the routers (EPW-A) and the tokens (KGW). With a
  // `router` model, `model` only writes (a second model on the same vocabulary): the contexts come
  // from `router` run in lockstep on the same tokens (its routers, or the oracle's guesses from its
  // output distributions). Throws Error when the vocabulary sizes differ.
  std::vector<int32_t> generate(Model& model, std::span<const int32_t> prompt, GenerateOptions o,
                                const Model* router = nullptr);

 private:
  ContextTracker tracker_;
  Bias bias_;
  bool following_ = false;  // the contexts come from a router model run in lockstep
};

// The watermark under attack, with its secret key or keyring: generates and detects (full method,
// repeats scored once, threshold 4). With m > 1 keys (defence 2, docs/THREAT_MODEL.md) each
// response is watermarked with the key KR-v1 picks from its seed and prompt (docs/SPEC.md 9) and
// detection tries every key, Bonferroni-corrected for m. The keys: `key` for m = 1, else
// `key` "#0" .. `key` "#m-1". EpwaCtx needs context_buckets H >= 2 (the others ignore it).
class Victim {
 public:
  // layer < 0 counts from the last MoE layer. Throws Error on an empty key, keys < 1 or bad
  // parameters.
  Victim(const Model& model, Scheme scheme, std::string_view key, double gamma, double delta,
         int32_t layer = -1, int32_t keys = 1, int32_t context_buckets = 0);
  // The key is picked from o.sampling.seed and the prompt.
  std::vector<int32_t> generate(Model& model, std::span<const int32_t> prompt,
                                const GenerateOptions& o);
  // The best key's result, its decision corrected for the number of keys.
  DetectionResult detect(Model& model, std::span<const int32_t> tokens,
                         int64_t prompt_tokens) const;
  // The key generate() uses for this seed and prompt.
  size_t key_for(uint64_t seed, std::span<const int32_t> prompt) const;
  const GreenLists& lists(size_t key = 0) const { return *lists_.at(key); }
  int32_t keys() const { return static_cast<int32_t>(lists_.size()); }
  Scheme scheme() const { return scheme_; }
  int32_t layer() const { return layer_; }

 private:
  Victim(const Model& model, Scheme scheme, std::vector<std::string> keys, double gamma,
         double delta, int32_t layer, int32_t context_buckets);
  Scheme scheme_;
  int32_t layer_;
  double delta_;
  std::vector<std::shared_ptr<const GreenLists>> lists_;
  std::string rotation_;
  KeyringDetector detector_;
};

// ---- the estimator ----

// One (context, token) pair the attacker saw: how often the token followed the context in the
// watermarked text, and how often the unwatermarked model would have produced it there (the sum
// of its base probabilities at those positions).
struct PairCount {
  int32_t token = 0;
  double observed = 0;
  double expected = 0;
};

// The attacker's green scores: per context, the pairs seen at least once.
class StolenLists {
 public:
  StolenLists(Scheme scheme, int32_t contexts, int32_t vocab)
      : scheme_(scheme), vocab_(vocab), pairs_(static_cast<size_t>(contexts)) {}
  // score = ln((observed + 1) / (expected + 1)): positive where the token came more often than the
  // model predicts (the watermark's doing), 0 for pairs never seen.
  static double score(const PairCount& p);
  // The bias weight clamp(score, 0, 1): a pair seen e times more often than expected counts fully.
  static double weight(const PairCount& p);
  double weight(int32_t context, int32_t token) const;  // 0 for pairs never seen
  // logits[v] += scale * weight(context, v) for every pair of the context seen.
  void add_bias(int32_t context, double scale, std::span<float> logits) const;

  void add(int32_t context, std::vector<PairCount> pairs);  // sorted by token, each seen
  std::span<const PairCount> pairs(int32_t context) const;
  Scheme scheme() const { return scheme_; }
  int32_t contexts() const { return static_cast<int32_t>(pairs_.size()); }
  int32_t vocab() const { return vocab_; }
  int64_t observed_tokens = 0;
  // Of those tokens, how many were keyed by the expert the router really chose (the black-box
  // attacker's oracle guesses; the gray-box attacker and KGW: all).
  int64_t expert_hits = 0;
  int64_t pair_count() const;

 private:
  Scheme scheme_;
  int32_t vocab_;
  std::vector<std::vector<PairCount>> pairs_;
};

struct ObservedText {
  std::vector<int32_t> prompt;  // BOS and prompt (context only)
  std::vector<int32_t> text;    // the watermarked tokens the attacker saw
};

// Learns green scores from `texts` in order, one teacher-forced pass each (the public model, no
// key): returns one StolenLists per checkpoint, after the first checkpoints[i] text tokens (or all
// of them when fewer). The base probabilities are the model's at `temperature` (the sampling
// temperature of the watermarked text, public in the model's generation_config). With an oracle,
// the black-box attacker's experts (above).
// With api_top_k > 0, the attacker of an API that returns only the top api_top_k probabilities
// of a position: those as they are, the rest of the mass spread evenly over the other tokens.
std::vector<StolenLists> steal(Model& model, Scheme scheme, int32_t layer,
                               std::span<const ObservedText> texts,
                               std::span<const int64_t> checkpoints, float temperature,
                               const std::function<void(int64_t done)>& progress = {},
                               const Oracle* oracle = nullptr, int32_t api_top_k = 0);
// The k largest of `values` as a mask (ties: the lower index first): mask[i] = 1 for them, 0 for
// the rest; every 1 when k <= 0 or k >= values.size().
void top_k_mask(std::span<const float> values, int32_t k, std::vector<uint8_t>& mask);

// The text-only attacker: no model, no router, no distributions, only the texts. Its context is the
// previous token whatever the scheme (for EPW-A the expert is invisible), its base probabilities
// `base` (V values) the unigram frequencies of its own human text. Returns lists of scheme Kgw (V
// token contexts), one per checkpoint as steal(); expert_hits 0.
std::vector<StolenLists> steal_text_only(std::span<const ObservedText> texts,
                                         std::span<const int64_t> checkpoints,
                                         std::span<const double> base);
// Add-one smoothed unigram probabilities of `tokens` over a vocabulary of `vocab`.
std::vector<double> unigram_base(std::span<const int32_t> tokens, int32_t vocab);

// How well the scores separate green from red (the truth from the key), as ROC AUC over the pairs
// seen (EpwaCtx: the attacker's context (e, token) is the truth's context (e, bucket(token))).
// One context (0.5 when its pairs are all green or all red):
double context_auc(const StolenLists& stolen, const GreenLists& truth, int32_t context);
struct ScoreQuality {
  double auc_seen = 0.5;     // all contexts' pairs pooled
  double auc_context = 0.5;  // context_auc averaged over the max_contexts contexts seen most
  double precision = 0;      // fraction truly green among the pairs of weight > 0
  int64_t estimated_green = 0;
  // Over those contexts, the fraction of a green list the attacker holds with weight > 0: how
  // much of it a spoofer can use.
  double coverage = 0;
};
ScoreQuality score_quality(const StolenLists& stolen, const GreenLists& truth,
                           int32_t max_contexts = 64);

// ---- an attacker who separates the keys of a keyring ----

// The attacker's context of each token of `text` after `prompt`, as steal() keys its estimates
// (EPW-A: the top-1 expert of the position before, from the public model; KGW: the previous
// token; EPW-A with buckets: expert x V + previous token).
std::vector<int32_t> attacker_contexts(Model& model, Scheme scheme, int32_t layer,
                                       std::span<const int32_t> prompt,
                                       std::span<const int32_t> text,
                                       const Oracle* oracle = nullptr);
// Observed texts sorted into k clusters without knowing any key (src/attack/cluster.cpp): from a
// random start (seed), each text in turn joins the cluster whose counts, without the text, make
// its (context, token) pairs most likely against the pooled estimate's expectation
// (sum of log((seen in the cluster + 1) / (expected x the cluster's share of the context + 1))),
// until no text moves or max_rounds. contexts[t]: attacker_contexts of texts[t].
struct Clustering {
  std::vector<size_t> labels;  // one per text, in [0, k)
  int32_t rounds = 0;
};
Clustering cluster_by_key(const StolenLists& pooled, std::span<const ObservedText> texts,
                          std::span<const std::vector<int32_t>> contexts, size_t k, uint64_t seed,
                          int32_t max_rounds = 50);

// ---- the attacks ----

// Spoofing: generation with no key, each step biased by attack_delta times the learned weights of
// its context. The public model `model` writes, or a second model `writer` on the same vocabulary
// does while `model` (or the oracle reading its output distributions) gives the contexts. With
// api_top_k > 0 the writer is an API: each step picks among its api_top_k most likely tokens
// (before the bias) only.
std::vector<int32_t> spoof(Model& model, const StolenLists& stolen, int32_t layer,
                           double attack_delta, std::span<const int32_t> prompt,
                           const GenerateOptions& o, const Oracle* oracle = nullptr,
                           Model* writer = nullptr, int32_t api_top_k = 0);

// Scrubbing: substitutes floor(budget * |text|) tokens of a watermarked text, each by the most
// likely of the model's top_k next tokens (given the rewritten prefix) other than the original.
// Informed (stolen non-null): first at the positions whose token has the largest learned weight
// (> 0), each by the most likely candidate of the smallest learned weight; the rest of the budget
// at random positions. Blind (stolen null): all at random positions (drawn with `seed`), the
// control that shows what the stolen lists add at the same budget.
struct ScrubOptions {
  double budget = 0.2;
  int32_t top_k = 20;
  uint64_t seed = 1;
  std::vector<int32_t> suppress_tokens;  // never used as replacements
};
std::vector<int32_t> scrub(Model& model, Scheme scheme, int32_t layer, const StolenLists* stolen,
                           std::span<const int32_t> prompt, std::span<const int32_t> text,
                           const ScrubOptions& o, const Oracle* oracle = nullptr);

// ---- the harness (`epwa attack steal`) ----
struct StealOptions {
  std::string key = "epwa-steal";    // the victim's secret key
  std::vector<std::string> prompts;  // first half: observed texts; second half: attacked texts
  std::vector<int64_t> observed = {1000, 10000, 100000};  // N, watermarked tokens seen
  std::vector<Scheme> schemes = {Scheme::Epwa, Scheme::Kgw};
  int32_t tokens = 200;  // new tokens per text
  int32_t texts = 20;    // texts spoofed and scrubbed per N
  int32_t keys = 1;      // the victim's keyring size m (a random key per response)
  // The attacker is told which key made each observed text and steals each key's lists from that
  // key's texts alone: an upper bound on any attacker who clusters texts by key. Spoofs use the
  // key seen most; a scrub uses the lists of the key that made its text.
  bool attacker_knows_keys = false;
  // The attacker sorts its observed texts into `keys` clusters itself (cluster_by_key) and steals
  // each cluster's lists from its texts; spoofs and scrubs use the largest cluster's. One N only.
  bool attacker_clusters_keys = false;
  int32_t context_buckets = 256;  // H of the epwa-ctx scheme (CTX-v1)
  // The black-box attacker: every expert it uses (stealing, spoofing, scrubbing, clustering) is
  // this PEPI oracle's guess (null: the gray-box attacker reads the router).
  std::shared_ptr<const Oracle> oracle;
  // The text-only attacker (steal_text_only) with these base probabilities, when not empty.
  std::vector<double> text_only_base;
  // A second model on the same vocabulary that writes the spoofs and their unwatermarked controls
  // (null: the public model writes them); the public model still gives the contexts.
  std::shared_ptr<Model> writer;
  // The API attacker (> 0): it sees only the top api_top_k probabilities of each position, for
  // its base distribution (steal) and its spoofs' choices (spoof). 0: the whole distribution.
  int32_t api_top_k = 0;
  double gamma = 0.5, delta = 2.0;
  double attack_delta = 4.0;
  double scrub_budget = 0.2;
  int32_t top_k = 20;
  float temperature = 0.8f, top_p = 0.95f;
  uint64_t seed = 1;
  std::function<void(const std::string&)> progress;  // progress lines
};
// Runs every scheme and N; returns the results (layout in docs/THREAT_MODEL.md).
nlohmann::json run_steal(Model& model, const Tokenizer& tok, const StealOptions& o);
// The table printed on stdout, one row per scheme and N.
std::string steal_table(const nlohmann::json& results);

}  // namespace epwa::attack
