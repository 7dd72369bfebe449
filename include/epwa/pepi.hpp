// PEPI: black-box detection of EPW-A (docs/PEPI.md). An oracle learns to predict the top-1 expert
// at the watermark layer from what an API returns, the next-token distribution of each position
// (top-k log-probabilities or the full vector), plus the tokens of the text itself. Detection then
// runs the spec's z-test with the predicted experts (DetectMethod::Pepi through PepiPredictor).
// The oracle's math lives in src/detect/ (no model); collecting training data from a model lives in
// src/eval/ (pepi_train.hpp there), the HTTP client in src/eval/api_client.cpp.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "epwa/detect.hpp"

namespace epwa {

class Model;
class Tokenizer;

// One position's next-token distribution: the most likely tokens, best first, with their natural
// log-probabilities. A full distribution holds all V entries.
struct TokenDistribution {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
};

// The top-k of a full row of logits (log-softmax then the k best; ties -> lower id). k <= 0 or
// k >= V keeps all V entries (sorted).
TokenDistribution top_logprobs(std::span<const float> logits, int32_t k);

// What the oracle sees. "topk:K": sparse top-K log-probs (weights per (token, expert)) + entropy
// and top-1 mass. "full": a fixed seeded count-sketch of the centred full log-prob vector (any
// linear function of the logits is linear in it). Suffixes add functions of the text itself
// (tokens <= p, never the scored token p+1): ",ctx" the ids of tokens p and p-1, ",ctx3" also
// p-2, ",bigram" the pair (p-1, p) hashed into kPepiBigramBuckets one-hot buckets. ",emb" adds
// dense features from a per-token table the model owner ships inside the oracle (see
// pepi_token_table): the table rows of tokens p, p-1, p-2, of the top-1 token and the
// probability-weighted mean over the top-k, so that what is learnt carries over to rare tokens.
inline constexpr uint32_t kPepiBigramBuckets = 1u << 15;
struct PepiFeatureSpec {
  bool full = false;
  int32_t k = 20;
  bool context = false;   // tokens p, p-1
  bool context3 = false;  // also token p-2 (implies context)
  bool bigram = false;    // hashed (p-1, p)
  bool embed = false;     // dense token-table features (needs the table)
};
PepiFeatureSpec parse_pepi_features(
    std::string_view s);  // "topk:20", "full", "topk:20,ctx3,bigram"
std::string pepi_features_name(const PepiFeatureSpec& s);

// Training data: one row of sparse features per position, its top-1 expert and router confidence.
struct PepiDataset {
  std::vector<uint32_t> index;
  std::vector<float> value;
  std::vector<int64_t> offsets{0};  // row r = [offsets[r], offsets[r + 1])
  std::vector<int32_t> expert;
  std::vector<float> confidence;
  int64_t rows() const { return static_cast<int64_t>(expert.size()); }
  void append(const PepiDataset& other);
};

// Features of one position p. `history` = tokens[0..p] (its last entry is the token at p, the
// last context token; may be empty). Throws Error on a distribution that does not fit V.
class PepiFeaturizer {
 public:
  // `token_table`: vocab_size rows of the same width (required by ",emb", ignored otherwise).
  PepiFeaturizer(PepiFeatureSpec spec, int32_t vocab_size, std::vector<float> token_table = {});
  void add_row(const TokenDistribution& d, std::span<const int32_t> history,
               PepiDataset& out) const;
  // Same with only the token at p and the one before (-1 = none).
  void add_row(const TokenDistribution& d, int32_t token, int32_t prev, PepiDataset& out) const;
  uint32_t dimension() const { return dim_; }
  // Features below this index also feed an oracle's hidden layer (all but the bigram buckets).
  uint32_t hidden_input_dimension() const { return bigram_base_; }
  const PepiFeatureSpec& spec() const { return spec_; }
  const std::vector<float>& token_table() const { return table_; }

 private:
  PepiFeatureSpec spec_;
  int32_t vocab_;
  std::vector<float> table_;
  uint32_t width_ = 0;  // table row width
  uint32_t dim_, dense_base_, ctx_base_, emb_base_, bigram_base_;
};

// Collected positions before featurization (top-k distribution, text, router logits), so that
// feature kinds and classifiers can be compared without re-running the model. Every token of a
// sequence is one position: its distribution is the one after tokens[0..p].
struct PepiRawData {
  int32_t k = 0, num_experts = 0, vocab_size = 0, router_layer = 0;
  PathwayRule pathway;  // how the router logits give the expert and confidence
  std::string router_hash;
  std::vector<int32_t> tokens;          // all sequences, concatenated
  std::vector<int64_t> seq_offsets{0};  // sequence s = [seq_offsets[s], seq_offsets[s + 1])
  std::vector<int32_t> top_tokens;      // k per position, best first
  std::vector<float> top_logprobs;      // k per position
  std::vector<float> router_logits;     // num_experts per position (layer router_layer)
  size_t sequences() const { return seq_offsets.size() - 1; }
  int64_t positions() const { return static_cast<int64_t>(tokens.size()); }
  void append(const PepiRawData& other);  // same k, experts, vocabulary and hash, else Error
  // "EPWARAW1" | u32 header bytes | JSON header | i32 tokens | i64 offsets | i32 | f32 | f32.
  void save(const std::filesystem::path& file) const;
  static PepiRawData load(const std::filesystem::path& file);
};
// Rows (features, top-1 expert label, router confidence) of the sequences `seqs` of `raw`.
// Throws Error if the featurizer needs more than raw.k tokens or the full distribution.
PepiDataset featurize_raw(const PepiRawData& raw, const PepiFeaturizer& f,
                          std::span<const size_t> seqs);

struct ConfidenceBucket {
  float lo = 0, hi = 1;  // router confidence in [lo, hi)
  int64_t n = 0;
  double accuracy = 0;
};

// Held-out numbers stored with the oracle.
struct OracleMetrics {
  int64_t train_size = 0, heldout_size = 0;
  double accuracy = 0;           // held-out top-1 agreement with the router
  double majority_accuracy = 0;  // always predicting the most frequent training expert
  double log_loss = 0;
  std::vector<ConfidenceBucket> by_confidence;
  std::vector<std::vector<int64_t>> confusion;  // [true expert][predicted expert], held-out
};

struct OracleInfo {
  std::string router_hash;  // IRSH-v1 of the model the oracle was trained on
  int32_t router_layer = 0;
  int32_t num_experts = 0;
  int32_t vocab_size = 0;
  PepiFeatureSpec features;
  std::string model_source;        // informational
  std::string corpus;              // informational: what the training text was
  std::vector<float> token_table;  // ",emb" features: vocab_size rows (pepi_token_table)
};

struct OracleTrainOptions {
  int32_t epochs = 6;
  double learning_rate = 0.2;  // AdaGrad step
  double l2 = 1e-7;            // per-example L2 on touched weights
  // 0: multinomial logistic regression. > 0: "wide and deep", the same linear part plus one
  // hidden ReLU layer of this width over the features below hidden_input_dimension() (the token
  // interactions a linear model cannot express); its weights are stored as f16.
  int32_t hidden = 0;
  double hidden_learning_rate = 0.05;  // AdaGrad step of the hidden layer
  uint64_t seed = 1;
  std::function<void(const std::string&)> progress;  // one line per epoch (stderr in the CLI)
};

// Multinomial logistic regression over the sparse features, optionally with a hidden layer.
class Oracle {
 public:
  static constexpr int32_t kFormatVersion = 2;  // 1 (logistic regression only) is still read

  // Fits on `train` and measures on `heldout` (may be empty: metrics then say heldout_size 0).
  static Oracle train(const OracleInfo& info, const PepiDataset& train, const PepiDataset& heldout,
                      const OracleTrainOptions& opt = {});
  // File: "EPWAPEPI", u32 version, u32 header bytes, JSON header (info, classifier, metrics),
  // linear weights and bias (f32), then for "wide-deep" W1, b1, W2 (f16; docs/PEPI.md).
  // Throws Error naming the file and the problem on anything malformed.
  static Oracle load(const std::filesystem::path& file);
  void save(const std::filesystem::path& file) const;

  // Probabilities of the E experts for one featurized row.
  std::vector<float> probabilities(std::span<const uint32_t> index,
                                   std::span<const float> value) const;
  // Top-1 expert and its predicted probability for one position.
  RouterRecord predict(const TokenDistribution& d, std::span<const int32_t> history) const;
  RouterRecord predict(const TokenDistribution& d, int32_t token, int32_t prev) const;
  OracleMetrics evaluate(const PepiDataset& data) const;

  // Throws Error when the model's IRSH-v1 differs from the one the oracle was trained on.
  void check_router_hash(std::string_view model_hash) const;

  const OracleInfo& info() const { return info_; }
  const OracleMetrics& metrics() const { return metrics_; }
  const PepiFeaturizer& featurizer() const { return feat_; }
  int32_t hidden() const { return hidden_; }
  std::string classifier() const {
    return hidden_ > 0 ? "wide-deep" : "multinomial-logistic-regression";
  }

 private:
  Oracle(OracleInfo info, int32_t hidden);
  // Expert logits of one row into z (E); the hidden pre-activations into a (H) when H > 0.
  void logits(std::span<const uint32_t> index, std::span<const float> value, std::span<float> z,
              std::span<float> a) const;
  OracleInfo info_;
  PepiFeaturizer feat_;
  OracleMetrics metrics_;
  int32_t hidden_ = 0;
  std::vector<float> weights_;  // dimension x E, row-major
  std::vector<float> bias_;     // E
  std::vector<float> w1_;       // hidden_input_dimension x H
  std::vector<float> b1_;       // H
  std::vector<float> w2_;       // H x E
};

nlohmann::json to_json(const OracleMetrics& m);

// Where the distributions come from: the local model (simulating an API) or an HTTP endpoint.
class DistributionSource {
 public:
  virtual ~DistributionSource() = default;
  // result[p] = next-token distribution after tokens[0..p], for p = 0 .. tokens.size() - 2 at
  // least (the one after the last token is optional).
  virtual std::vector<TokenDistribution> distributions(std::span<const int32_t> tokens) = 0;
};

// The ExpertPredictor for Detector::set_expert_predictor.
class PepiPredictor : public ExpertPredictor {
 public:
  PepiPredictor(std::shared_ptr<const Oracle> oracle, std::shared_ptr<DistributionSource> source);
  std::vector<RouterRecord> predict(std::span<const int32_t> tokens,
                                    int64_t prompt_tokens) override;

 private:
  std::shared_ptr<const Oracle> oracle_;
  std::shared_ptr<DistributionSource> source_;
};

// --- model-side pieces (module eval) ---

// IRSH-v1 over the router of every MoE layer of the model.
std::string model_router_hash(const Model& m);

// The local model as a distribution source (top-k, or all V when k <= 0).
class LocalDistributionSource : public DistributionSource {
 public:
  LocalDistributionSource(Model& model, int32_t top_k);
  std::vector<TokenDistribution> distributions(std::span<const int32_t> tokens) override;

 private:
  Model* model_;
  int32_t k_;
};

// An OpenAI legacy-completions compatible endpoint: POST {base}/v1/completions with
// {"prompt": [ids], "max_tokens": 0, "echo": true, "logprobs": K} and read
// choices[0].logprobs.top_logprobs (keys "token_id:N" as vLLM's return_tokens_as_token_ids
// writes them, else token text mapped back through the tokenizer). Throws Error with the URL and
// the problem on connection failures, HTTP errors and malformed responses.
struct ApiOptions {
  std::string url;  // "http://127.0.0.1:8000" (a trailing /v1 or /v1/completions is accepted)
  int32_t top_k = 20;
  std::string model;  // the "model" field, when the server wants one
  int32_t timeout_s = 60;
};
class ApiDistributionSource : public DistributionSource {
 public:
  // `tok` maps token text back to ids when the server returns text keys (may be null).
  ApiDistributionSource(ApiOptions opt, std::shared_ptr<const Tokenizer> tok);
  std::vector<TokenDistribution> distributions(std::span<const int32_t> tokens) override;

 private:
  ApiOptions opt_;
  std::shared_ptr<const Tokenizer> tok_;
};

// Parses a completions response body (exposed for tests). `expected` = number of prompt tokens.
std::vector<TokenDistribution> parse_completions_logprobs(std::string_view body, size_t expected,
                                                          const Tokenizer* tok);
// The response the loopback server (epwa serve-api) writes for a prompt of ids.
std::string completions_response_json(std::span<const int32_t> tokens,
                                      std::span<const TokenDistribution> dists,
                                      const Tokenizer* tok, bool token_ids_as_keys);

// Training data from a model: teacher-forced passes over `sequences` (each starts with BOS),
// features from the top-k (or full) distribution and labels from the router at `layer`.
struct CollectOptions {
  int32_t router_layer = -1;  // -1 = last MoE layer
  PepiFeatureSpec features;
  std::function<void(const std::string&)> progress;
};
PepiDataset collect_pepi_data(Model& model, std::span<const std::vector<int32_t>> sequences,
                              const CollectOptions& opt);

// The ",emb" table: per token t, the router of `layer` (after its RMSNorm weight) applied to the
// unit-RMS input embedding of t and to the unit-RMS output-head row of t: 2 * num_experts floats
// a row. What the router would say of a residual stream made of that token alone, and of a final
// state that predicts it.
std::vector<float> pepi_token_table(const Model& model, int32_t layer);

// The same passes, kept raw (top-k with k = opt.features.k; "full" is not supported raw).
PepiRawData collect_pepi_raw(Model& model, std::span<const std::vector<int32_t>> sequences,
                             const CollectOptions& opt);

// Convenience for the detect command: loads the oracle, checks it against the model's hash and
// returns the predictor over `source`.
std::shared_ptr<PepiPredictor> make_pepi_predictor(const std::filesystem::path& oracle_file,
                                                   std::string_view model_router_hash,
                                                   std::shared_ptr<DistributionSource> source);

}  // namespace epwa
