// Token sampling and the generation loop.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "epwa/model.hpp"
#include "epwa/observe.hpp"

namespace epwa {

struct SamplingOptions {
  float temperature = 0.0f;  // 0 = greedy (argmax, ties to the lower id)
  int32_t top_k = 0;         // 0 = off
  float top_p = 1.0f;        // 1 = off
  uint64_t seed = 0;
};

// A seeded sampler whose draws are the same on every platform (own PRNG, no std:: distributions).
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& o);
  // Picks a token from raw logits (modified in place: temperature, top-k, top-p). With `keyed`
  // uniforms r (and temperature > 0) the token is argmax ln r(v) / p(v) over the kept candidates:
  // a draw from the same distribution p whose randomness is the key's.
  int32_t sample(std::span<float> logits, const KeyedUniforms* keyed = nullptr);

 private:
  double uniform();  // [0, 1)
  SamplingOptions opt_;
  uint64_t state_;
  std::vector<int32_t> order_;
};

// Restricts the tokens a generation may sample next (JsonConstraint: JSON of a schema).
class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // Sets the logits of the tokens that may not come next to -inf.
  virtual void mask(std::span<float> logits) const = 0;
  // The sampled token.
  virtual void accept(int32_t token) = 0;
};

struct GenerateOptions {
  int32_t max_new_tokens = 32;
  SamplingOptions sampling;
  std::vector<int32_t> stop_tokens;  // generation ends after emitting one of these
  // The stop tokens are never sampled before this many new tokens (transformers' min_new_tokens):
  // texts of a set length, e.g. to measure detection at exactly N tokens. Not with a constraint
  // (a finished JSON value allows only a stop token).
  int32_t min_new_tokens = 0;
  // Never sampled: their logits are set to -inf after the processor (non_text_token_ids, less the
  // stop tokens, keeps <unk> and control tokens out of the text).
  std::vector<int32_t> suppress_tokens;
  RouterObserver* observer = nullptr;     // sees every router decision (prompt and generated)
  LogitsProcessor* processor = nullptr;   // adjusts raw logits before sampling (the watermark)
  TokenConstraint* constraint = nullptr;  // masks what may not come next, after the processor
  std::function<void(int32_t)> on_token;  // streaming callback
};

// Sets the logits of `ids` that are in the vocabulary to -inf: tokens the sampler may not pick at
// this step (the suppressed tokens; the stop tokens before min_new_tokens). generate() and the
// server's batch engine both mask through it.
void forbid(std::span<float> logits, std::span<const int32_t> ids);

// The most new tokens generate() makes after `prompt_tokens`: `max_new_tokens`, capped so that
// the prompt and the text fit the model's context (max_position_embeddings); 0 when the prompt
// fills it already.
int32_t max_generated_tokens(const Model& model, int64_t prompt_tokens, int32_t max_new_tokens);

// Generates after `prompt` (which must be non-empty) up to max_generated_tokens() tokens; returns
// the new tokens only. The KV cache grows as the text does: a large max_new_tokens reserves
// nothing up front.
std::vector<int32_t> generate(Model& model, std::span<const int32_t> prompt,
                              const GenerateOptions& o);

}  // namespace epwa
