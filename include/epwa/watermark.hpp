// EPW-A watermarking, version 1 (docs/SPEC.md): the router hash IRSH-v1, the per-expert green lists
// GL-v1 and the logits processor (GSG / EWP). It sees the engine only through observe.hpp.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "epwa/observe.hpp"

namespace epwa {

// One MoE layer's router: an E x D matrix, expert-major rows (row e = the gate vector of expert e).
struct RouterMatrix {
  RouterMatrix() = default;
  // (IRSH-v1 needs only the first four.)
  RouterMatrix(int32_t layer_, int32_t experts_, int32_t hidden_, std::span<const float> weights_,
               int32_t block_ = 0, std::span<const float> bias_ = {})
      : layer(layer_),
        experts(experts_),
        hidden(hidden_),
        weights(weights_),
        block(block_),
        bias(bias_) {}
  int32_t layer = 0;  // MoE-layer index (0-based among MoE layers)
  int32_t experts = 0;
  int32_t hidden = 0;
  std::span<const float> weights;  // experts * hidden values
  int32_t block = 0;               // its transformer layer (IRSH-v2)
  std::span<const float> bias;     // a router bias or correction term, E values or none (IRSH-v2)
};

// IRSH-v1: SHA-256 over "EPWA-IRSH-v1" then, per layer in the given order, u32 LE layer, u32 LE E,
// u32 LE D and the bf16 (RNE) values as u16 LE. Returns 64 lowercase hex characters.
// Throws Error when a matrix's size does not match E x D or the list is empty.
std::string irsh_v1(std::span<const RouterMatrix> routers);

// IRSH-v2 (docs/SPEC.md): also hashes the transformer-layer count, each MoE layer's transformer
// layer, the routing rule (e.g. "softmax,top2,raw") and any router bias, so that models whose
// routers agree but route differently never share green lists.
std::string irsh_v2(int32_t num_layers, std::string_view rule,
                    std::span<const RouterMatrix> routers);

// The pathway of one position (docs/SPEC.md sections 0 and 3) from its router logits: the top-1
// expert and its confidence under the layer's rule. The default rule: the argmax (ties -> lower
// index) and its softmax probability over all E logits. Throws Error on an empty span, non-finite
// logits or a rule that does not fit the E logits.
struct ExpertChoice {
  int32_t expert = -1;
  float confidence = 0.0f;
};
ExpertChoice top1_expert(std::span<const float> router_logits, const PathwayRule& rule = {});
// The same for an observation, under the rule it carries.
ExpertChoice top1_expert(const RouterObservation& obs);

// The watermark layer among the MoE layers: `requested` >= 0 counts from the first, < 0 from the
// last
// (-1 the last, -2 the one before). Throws Error when out of range.
int32_t resolve_router_layer(int32_t requested, int32_t num_moe_layers);

// GL-v1 green lists, one per expert, each the first floor(gamma * V) entries of a keyed
// Fisher-Yates shuffle of [0, V). Each list is built once, on first use (thread-safe), and kept as
// a bitset. With context buckets H > 0 (CTX-v1, docs/SPEC.md section 10, a defence against
// watermark stealing) a list is keyed by the expert together with a keyed bucket of the previous
// token: E * H lists, context c = e * H + bucket(previous token). Everything that takes an
// "expert" below takes such a context; with H = 0 the context is the expert (GL-v1 unchanged).
class GreenLists {
 public:
  // `key` holds the raw key bytes (UTF-8 of --key, or a key file's bytes); `router_hash_hex` is the
  // 64-hex IRSH-v1 of the model. Throws Error on an empty key, a malformed hash, V < 2,
  // gamma outside (0, 1), E < 1 or H outside {0} u [2, 65536].
  GreenLists(std::string_view key, std::string_view router_hash_hex, int32_t vocab_size,
             double gamma, int32_t num_experts, int32_t context_buckets = 0);
  ~GreenLists();
  GreenLists(const GreenLists&) = delete;
  GreenLists& operator=(const GreenLists&) = delete;

  bool is_green(int32_t context, int32_t token) const;  // throws Error when either is out of range
  // Bitset of a context's list: bit v of word v / 64 is set when token v is green.
  std::span<const uint64_t> bits(int32_t context) const;
  // The green tokens in shuffle order (the first floor(gamma V) shuffled entries); computed on
  // call.
  std::vector<int32_t> green_tokens_in_order(int32_t context) const;
  // The context of a token whose previous position routed to `expert` and held `previous_token`:
  // the expert itself with H = 0, else expert * H + bucket(previous_token). Throws Error when
  // either is out of range.
  int32_t context(int32_t expert, int32_t previous_token) const;
  int32_t bucket(int32_t token) const;  // CTX-v1's keyed bucket of a token (H > 0 only)
  // EXP-v1 (docs/SPEC.md 11), keyed by the raw key: the seed of a step whose previous position
  // routed to `expert` and held `previous_token`, and the uniform in (0, 1) it gives a token.
  uint64_t exp_seed(int32_t expert, int32_t previous_token) const;
  static double exp_uniform(uint64_t seed, int32_t token);

  int32_t green_count() const { return green_count_; }  // floor(gamma * V)
  int32_t vocab_size() const { return vocab_; }
  int32_t num_experts() const { return experts_; }
  int32_t context_buckets() const { return buckets_; }  // H, 0 = GL-v1
  int32_t num_contexts() const { return buckets_ > 0 ? experts_ * buckets_ : experts_; }
  double gamma() const { return gamma_; }
  const std::string& router_hash() const { return hash_; }

 private:
  struct Slot;
  const Slot& slot(int32_t context) const;
  std::vector<int32_t> shuffle(int32_t context) const;

  std::string key_, hash_;  // key_: the list key (CTX-v1 derives its own from the key)
  std::string raw_key_;     // the key as given (EXP-v1's)
  int32_t vocab_, experts_, buckets_, green_count_;
  double gamma_;
  std::vector<uint16_t> bucket_of_;  // CTX-v1: bucket of every token
  std::unique_ptr<Slot[]> slots_;
};

// Keyring rotation KR-v1 (docs/SPEC.md section 9): a deployment holds m keys and watermarks each
// response with one of them, chosen so that a client cannot predict or pin it (a client that
// could would collect text under one key and steal that key's lists as if there were one).
// The rotation secret: SHA-256("EPWA-KR-v1" || for each key in keyring order: u32 LE length ||
// bytes), 32 bytes. Throws Error on no keys or an empty one.
std::string keyring_rotation_secret(std::span<const std::string> secrets);
// The index in [0, m) of the key for one response: the first 8 bytes (u64 LE) of
// HMAC(rotation_secret, u64 LE seed || u32 LE of each prompt token id) mod m. With the prompt in
// the message a client that fixes its seed still meets every key. Throws Error when m < 1.
size_t keyring_pick(std::string_view rotation_secret, uint64_t seed,
                    std::span<const int32_t> prompt, size_t m);
// The m keys the measuring tools (`epwa attack steal --keys`, `epwa eval --keys`) derive from one
// key: the key itself when m = 1, else key#0 ... key#(m-1). Throws Error on an empty key or m < 1.
std::vector<std::string> derived_keys(std::string_view key, int32_t m);

// GSG and EWP bias the green list; Exp (EXP-v1, docs/SPEC.md 11) leaves the distribution as it
// is and makes the sampler's draw the key's (distortion-free; temperature > 0 only).
enum class WatermarkMode { GSG, EWP, Exp };
std::string_view watermark_mode_name(WatermarkMode m);          // "gsg" / "ewp" / "exp"
WatermarkMode watermark_mode_from_name(std::string_view name);  // throws Error on an unknown name

// The largest watermark bias (delta, and each EWP expert delta). Far beyond any logit spread, so
// it already forces green tokens; larger values would swamp the logits in float arithmetic
// (1e30 + logit == 1e30), making every green token tie and the first one, often <unk>, win.
inline constexpr double kMaxDelta = 1e4;

struct WatermarkConfig {
  WatermarkMode mode = WatermarkMode::GSG;
  double gamma = 0.5;
  double delta = 2.0;
  std::vector<double> expert_deltas;  // EWP base delta per expert; empty = all equal to delta
  int32_t router_layer = 0;           // resolved MoE layer index (see resolve_router_layer)
  // Selective bias (docs/SPEC.md "Entropy threshold"): a step whose next-token distribution has
  // less entropy than this (nats) is left unbiased. 0 = every step is biased.
  double min_entropy = 0.0;
  // CTX-v1 (docs/SPEC.md section 10): lists keyed by the expert and one of H keyed buckets of the
  // previous token; 0 = GL-v1 (the expert alone). Must match the lists'.
  int32_t context_buckets = 0;
};

// The Shannon entropy (nats) of softmax(logits), in double precision; -inf logits count as zero
// probability. The rule both the selective bias and entropy-aware detection apply.
double next_token_entropy(std::span<const float> logits);

// Adds the green-list bias to the next-token logits. The engine reports the routers of every layer
// through observe(); the processor keeps the top-1 expert of the most recent observation at the
// watermark layer (that of position t-1, which produced the logits of token t). process() consumes
// that observation: calling it again without a new one throws, so a mis-wired engine cannot
// silently watermark with a stale expert.
class WatermarkProcessor : public RouterObserver, public LogitsProcessor {
 public:
  // Throws Error when cfg.gamma differs from lists->gamma(), expert_deltas has the wrong size,
  // delta or an expert delta is outside [0, kMaxDelta] (or NaN) or the layer is negative.
  WatermarkProcessor(WatermarkConfig cfg, std::shared_ptr<const GreenLists> lists);

  void observe(const RouterObservation& obs) override;
  std::vector<int32_t> layers() const override { return {cfg_.router_layer}; }
  void process(std::span<float> logits) override;
  const KeyedUniforms* uniforms() const override;  // the exp mode's, after process()
  void reset();                                    // forget the last observation (new sequence)
  // CTX-v1 (lists with context buckets): the token at the observed position (the prompt's last
  // token, then each sampled one). process() then throws unless one was given since the last
  // process(), so a caller that never tells the tokens cannot watermark with a stale context.
  void set_previous_token(int32_t token);

  bool has_observation() const { return fresh_; }  // an unconsumed observation at the layer
  int32_t last_expert() const { return expert_; }
  float last_confidence() const { return confidence_; }
  int64_t last_position() const { return position_; }
  // The bias process() adds to green tokens for the current observation (delta, or delta_e * c).
  double current_bias() const;

  const WatermarkConfig& config() const { return cfg_; }
  const GreenLists& lists() const { return *lists_; }

 private:
  WatermarkConfig cfg_;
  std::shared_ptr<const GreenLists> lists_;
  int32_t expert_ = -1;
  float confidence_ = 0.0f;
  int64_t position_ = -1;
  bool fresh_ = false;
  int32_t previous_ = -1;
  bool previous_fresh_ = false;
  struct ExpDraw : KeyedUniforms {
    uint64_t seed = 0;
    double uniform(int32_t token) const override;
  } exp_draw_;
  bool exp_armed_ = false;
  std::unordered_set<uint64_t> exp_seen_;  // (expert, previous token) contexts keyed so far
};

}  // namespace epwa
