// OpenAI's wire format for the server: request bodies checked field by field into parameters, and
// the JSON of errors. Every problem is an ApiError with the HTTP status and the field it concerns.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "epwa/chat_template.hpp"
#include "epwa/detect.hpp"
#include "epwa/error.hpp"
#include "epwa/generate.hpp"
#include "epwa/json_constraint.hpp"
#include "epwa/server.hpp"
#include "epwa/tokenizer.hpp"
#include "epwa/tool_calls.hpp"

namespace epwa::serve {

class ApiError : public Error {
 public:
  ApiError(int status, std::string type, const std::string& message, std::string param = {})
      : Error(message), status(status), type(std::move(type)), param(std::move(param)) {}
  int status;
  std::string type;   // "invalid_request_error", "rate_limit_error", ...
  std::string param;  // the request field at fault, if any
};

ApiError bad_request(const std::string& message, const std::string& param = {});

// {"error": {"message", "type", "param", "code"}} as OpenAI sends it.
nlohmann::json error_json(const ApiError& e);

// The body as a JSON object (400 on invalid JSON, invalid UTF-8, or another JSON type).
nlohmann::json parse_body(const std::string& body);

struct CompletionParams {
  std::vector<int32_t> prompt;  // BOS included
  int32_t max_tokens = 16;
  int32_t min_tokens = 0;  // vLLM's min_tokens: EOS and end-of-turn held back this long
  SamplingOptions sampling;
  std::vector<std::string> stop;
  bool stream = false;
  std::optional<bool> watermark;  // the request's "watermark" field, when given
  std::string key_id;             // "watermark": "<key id>" picks a key
  int32_t logprobs = -1;          // >= 0: log-probabilities with this many alternatives
  bool echo = false;              // completions: the prompt (and its log-probabilities) first
  int32_t n = 1;                  // choices: choice i samples with seed + i
  bool tools = false;             // chat: "tools" given and tool_choice not "none"
  // chat: tool_choice "required", or the function it names: the reply opens with a call.
  bool tool_required = false;
  std::string tool_name;
  // chat: response_format json_object / json_schema: the reply is JSON of this schema.
  std::shared_ptr<const JsonSchema> response_schema;
  // chat: the functions a tool_choice lets the forced call name (the named one; every tool for
  // "required") with their arguments' schemas: "parameters", or any object.
  std::vector<std::pair<std::string, std::shared_ptr<const JsonSchema>>> tool_schemas;
};

// The most choices ("n") a request may ask for.
inline constexpr int32_t kMaxChoices = 16;

// The most alternatives "logprobs" / "top_logprobs" may ask for (OpenAI allows 5 and 20).
inline constexpr int32_t kMaxLogprobs = 20;

// POST /v1/completions's body. The prompt is text (tokenized with BOS) or token ids.
CompletionParams parse_completion(const nlohmann::json& body, const Tokenizer* tokenizer,
                                  int32_t vocab, const ServerLimits& limits);

// POST /v1/chat/completions's body: the messages rendered with the chat template (null: none,
// a 400), tokenized with its special tokens parsed and no BOS added (the template writes it).
// `text` is the body as sent (parse_body's `body` lost its key order, which the template keeps);
// `syntax` is the template's tool-call syntax (tool_call_syntax, found once by the server).
CompletionParams parse_chat_completion(const nlohmann::json& body, const std::string& text,
                                       const ChatTemplate* chat, ToolCallSyntax syntax,
                                       const Tokenizer* tokenizer, int32_t vocab,
                                       const ServerLimits& limits);

struct DetectParams {
  std::vector<int32_t> tokens;  // BOS, prompt, text
  int64_t prompt_tokens = 1;    // BOS and the prompt are context only
  std::string key_id;
  DetectMethod method = DetectMethod::Full;
  bool tokens_detail = false;
  nlohmann::json id;  // a batch input's "id", echoed in its result (null: none)
};

// POST /v1/watermark/detect's body: "text" or "tokens", optional "prompt" (text or ids), or a
// batch: "inputs": [{"text" | "tokens", "prompt", "id"}, ...]; with "key_id", "method" ("full" or
// "weighted") and "tokens_detail" for all. One DetectParams per text, in order.
std::vector<DetectParams> parse_detect(const nlohmann::json& body, const Tokenizer* tokenizer,
                                       int32_t vocab, int32_t bos, const ServerLimits& limits);

// The longest prefix of `s` that does not end inside a UTF-8 sequence (streamed text waits for the
// rest of a character split across tokens).
size_t complete_utf8_prefix(const std::string& s);

}  // namespace epwa::serve
