// Constrained decoding: the tokens a generation may sample next, so that its text is a JSON value
// that matches a JSON schema (docs/SERVER.md, "Structured output"), optionally followed by a fixed
// text (a tool call's closing markers). Each step the sampler's logits of every token that would
// break the text are set to -inf; once the text is complete only the end tokens remain.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "epwa/generate.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa {

// A JSON schema compiled for matching, shared by the requests that use it. Supported: `type` (one
// or a list), `properties`, `required`, `additionalProperties` (false by default when
// `properties` is given, as in OpenAI's strict mode; true or a schema allows other keys),
// `items`, `minItems`, `maxItems`, `enum` and `const` (strings, numbers, booleans, null),
// `anyOf` / `oneOf` of alternatives that differ in their JSON type, and `$ref` to `#/$defs/...` or
// `#/definitions/...`. Other keywords (`pattern`, `minimum`, `format`, ...) are not enforced.
// An empty schema ({}) or `true` accepts any JSON value. Throws Error naming what is not supported.
class JsonSchema {
 public:
  explicit JsonSchema(const nlohmann::json& schema);
  ~JsonSchema();
  JsonSchema(const JsonSchema&) = delete;
  JsonSchema& operator=(const JsonSchema&) = delete;
  struct Node;
  const Node& root() const;

 private:
  std::vector<std::unique_ptr<Node>> nodes_;
  const Node* root_ = nullptr;
  friend struct SchemaCompiler;
};

// The per-token bytes of a vocabulary, read once per tokenizer: what each token adds to the text,
// and whether it is a control token (never part of a JSON value; allowed in the fixed suffix).
class TokenTexts {
 public:
  explicit TokenTexts(const Tokenizer& tok);
  // A vocabulary given as each token's bytes and whether it is a control token (benchmarks of
  // vocabularies no local tokenizer has).
  TokenTexts(std::vector<std::string> bytes, std::vector<bool> control);
  int32_t size() const { return static_cast<int32_t>(bytes_.size()); }
  const std::string& bytes(int32_t id) const { return bytes_[id]; }
  bool control(int32_t id) const { return control_[id]; }
  // No '"', '\\', control character or byte of a JSON structure: a run of string contents.
  bool plain(int32_t id) const { return plain_[id]; }

 private:
  void classify();
  std::vector<std::string> bytes_;
  std::vector<bool> control_, plain_;
};

// One of several texts a constrained generation may be: a fixed prefix, then JSON of a schema
// (a tool call's function name and what the template writes before its arguments, then the
// arguments).
struct JsonAlternative {
  std::string prefix;
  std::shared_ptr<const JsonSchema> schema;
};

// One generation's matcher: the text so far is a prefix of `schema`'s value then `suffix`.
class JsonConstraint final : public TokenConstraint {
 public:
  // `end_tokens`: what may follow the complete text (EOS, the end of the turn).
  JsonConstraint(std::shared_ptr<const JsonSchema> schema, std::shared_ptr<const TokenTexts> texts,
                 std::string suffix, std::vector<int32_t> end_tokens);
  // One of `alternatives` (1 to 64; no prefix may start another), then `suffix`.
  JsonConstraint(std::vector<JsonAlternative> alternatives, std::shared_ptr<const TokenTexts> texts,
                 std::string suffix, std::vector<int32_t> end_tokens);
  ~JsonConstraint() override;
  // Sets the logits of the tokens that may not come next to -inf (throws Error when none is
  // left, which a vocabulary with every byte never does).
  void mask(std::span<float> logits) const override;
  // The sampled token; throws Error for a token mask() forbade.
  void accept(int32_t token) override;
  // Whether the value and the suffix are complete.
  bool complete() const;
  // Whether `text` (bytes) can continue the text so far (for tests).
  bool accepts(std::string_view text) const;

  struct State;

 private:
  std::vector<std::string> prefixes_;
  std::vector<std::shared_ptr<const JsonSchema>> schemas_;
  std::shared_ptr<const TokenTexts> texts_;
  std::string suffix_;
  std::vector<int32_t> end_;
  std::unique_ptr<State> state_;
};

}  // namespace epwa
