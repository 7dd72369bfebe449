// Continuous batching: generation requests decode together over one shared Model, each in its own
// sequence of one multi-sequence Context, with its own sampler and watermark state. Requests join
// and leave between steps; a prompt enters in chunks, so a long prompt does not stall the
// sequences already decoding. The server (docs/SERVER.md) is a thin layer over this.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/generate.hpp"
#include "epwa/model.hpp"
#include "epwa/watermark.hpp"

namespace epwa {

enum class FinishReason : uint8_t { Stop, Length, Cancelled, Error };
std::string_view finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", "error"

// Thrown by BatchEngine::submit when as many requests as allowed already wait (HTTP 429).
class QueueFull : public Error {
 public:
  using Error::Error;
};

// The model's log-probabilities at one position, taken before any watermark bias or suppression
// (so they reveal nothing of a key): the token's, and the `k` most likely tokens.
struct TokenLogprobs {
  int32_t token = -1;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // best first, ties to the lower id
};

struct BatchRequest {
  std::vector<int32_t> prompt;  // BOS included; at least one token
  int32_t max_new_tokens = 16;
  SamplingOptions sampling;
  std::vector<int32_t> stop_tokens;      // generation ends after emitting one (it is reported)
  std::vector<int32_t> suppress_tokens;  // never sampled (as GenerateOptions::suppress_tokens)
  // The stop tokens are not sampled before this many new tokens (GenerateOptions::min_new_tokens);
  // at most max_new_tokens, and not with a constraint.
  int32_t min_new_tokens = 0;
  std::unique_ptr<WatermarkProcessor> watermark;  // null: no watermark
  // Null: free text. Else the tokens it forbids are masked after the watermark's bias (so the
  // text is valid JSON of its schema whatever the bias does), and it sees each sampled token.
  std::unique_ptr<TokenConstraint> constraint;
  // Called on the engine's thread, in order: each new token, then once at the end (the message
  // is set for FinishReason::Error). Keep them short: the whole batch waits for them.
  std::function<void(int32_t token)> on_token;
  // With logprobs >= 0: on_logprobs gets each new token's TokenLogprobs (with `logprobs`
  // alternatives) just before on_token; with prompt_logprobs also, first, those of prompt tokens
  // 1 .. n-1 (echo), in order.
  int32_t logprobs = -1;
  bool prompt_logprobs = false;
  std::function<void(const TokenLogprobs&)> on_logprobs;
  std::function<void(FinishReason, const std::string& error)> on_done;
};

struct BatchEngineOptions {
  int32_t slots = 8;            // sequences decoded together at most
  int64_t context = 2048;       // positions per sequence (prompt + new), at most the model's
  int64_t prefill_chunk = 256;  // prompt tokens a sequence contributes to one step at most
  int32_t queue = 64;           // requests waiting for a slot at most (beyond the free slots)
};

class BatchEngine {
 public:
  // Starts the engine's thread. Throws Error on options out of range.
  BatchEngine(const Model& model, BatchEngineOptions o);
  // Cancels every request (each gets on_done(Cancelled)) and joins the thread.
  ~BatchEngine();
  BatchEngine(const BatchEngine&) = delete;
  BatchEngine& operator=(const BatchEngine&) = delete;

  // Queues a request and returns its id. Throws QueueFull when every slot is taken and `queue`
  // requests already wait, Error when the request is invalid (empty prompt, a token id out of
  // range, prompt + max_new_tokens beyond the context, a watermark without a layer of this model).
  uint64_t submit(BatchRequest r);
  // Ends a request (queued or running) with Cancelled before its next step; unknown ids are
  // ignored (it may have finished already).
  void cancel(uint64_t id);

  struct Stats {
    int32_t running = 0, queued = 0;
    uint64_t steps = 0, tokens_in = 0, tokens_out = 0, finished = 0;
  };
  Stats stats() const;
  const BatchEngineOptions& options() const { return opt_; }

 private:
  struct Job;
  void loop();
  void step(std::unique_lock<std::mutex>& lock);
  void finish(Job& j, FinishReason why, const std::string& error = {});

  const Model& model_;
  BatchEngineOptions opt_;
  Context ctx_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Job>> queue_;
  std::unordered_set<uint64_t> cancels_;
  std::vector<std::unique_ptr<Job>> slots_;  // by sequence of ctx_; null = free
  int32_t occupied_ = 0;                     // slots holding a job, as of the last step (mu_)
  uint64_t next_id_ = 1;
  bool stop_ = false;
  Stats stats_;
  std::thread thread_;
};

}  // namespace epwa
