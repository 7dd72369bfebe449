// Continuous batching (include/epwa/batch_engine.hpp). One thread runs steps: admit queued requests
// into free sequences of the Context, give each running request's next tokens (a prompt chunk, or
// the token it sampled last) to one Model::decode, then sample for the requests whose prompt is
// done. Only the queue, cancellations and statistics are shared with other threads (under mu_);
// the running jobs belong to the engine's thread.
#include "epwa/batch_engine.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_set>

namespace epwa {

std::string_view finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop:
      return "stop";
    case FinishReason::Length:
      return "length";
    case FinishReason::Cancelled:
      return "cancelled";
    case FinishReason::Error:
      return "error";
  }
  return "error";
}

struct BatchEngine::Job {
  uint64_t id;
  BatchRequest req;
  Sampler sampler;
  size_t fed = 0;         // prompt tokens given to the model so far
  int32_t generated = 0;  // new tokens sampled
  int32_t next = -1;      // the last sampled token, given to the model at the next step
  bool sample = false;    // this step's logits are this job's next-token logits
  Job(uint64_t i, BatchRequest r) : id(i), req(std::move(r)), sampler(req.sampling) {}
};

namespace {

// log_softmax(row)[token] and the k best (value, then lower id), in double precision.
TokenLogprobs logprobs_of(std::span<const float> row, int32_t token, int32_t k) {
  float mx = -std::numeric_limits<float>::infinity();
  for (float x : row) mx = std::max(mx, x);
  double sum = 0;
  for (float x : row) sum += std::exp(static_cast<double>(x) - mx);
  const double lse = mx + std::log(sum);
  TokenLogprobs out;
  out.token = token;
  out.logprob = static_cast<float>(row[token] - lse);
  std::vector<int32_t> ids(row.size());
  std::iota(ids.begin(), ids.end(), 0);
  const size_t kk = std::min<size_t>(static_cast<size_t>(std::max(k, 0)), ids.size());
  std::partial_sort(ids.begin(), ids.begin() + kk, ids.end(), [&](int32_t a, int32_t b) {
    return row[a] > row[b] || (row[a] == row[b] && a < b);
  });
  for (size_t i = 0; i < kk; ++i)
    out.top.emplace_back(ids[i], static_cast<float>(row[ids[i]] - lse));
  return out;
}

// Routes each router observation to the watermark of the request decoding in that sequence.
struct SlotObserver : RouterObserver {
  std::vector<WatermarkProcessor*> by_slot;
  void observe(const RouterObservation& obs) override {
    if (WatermarkProcessor* w = by_slot[obs.sequence]) w->observe(obs);
  }
  // The watermark layers of the slots that have one (none: nothing to observe).
  std::vector<int32_t> layers() const override {
    std::vector<int32_t> l;
    for (const WatermarkProcessor* w : by_slot)
      if (w && std::find(l.begin(), l.end(), w->config().router_layer) == l.end())
        l.push_back(w->config().router_layer);
    return l;
  }
};

// A sequence never runs past the model's context.
BatchEngineOptions capped(BatchEngineOptions o, const Model& m) {
  o.context = std::min<int64_t>(o.context, m.config().max_position_embeddings);
  return o;
}

}  // namespace

BatchEngine::BatchEngine(const Model& model, BatchEngineOptions o)
    : model_(model),
      opt_(capped(o, model)),
      ctx_(model, std::min<int64_t>(std::max<int64_t>(o.context, 1), 256),
           std::max<int32_t>(o.slots, 1)) {
  check(o.slots >= 1 && o.slots <= 1024,
        "batch engine: slots must be in [1, 1024], got " + std::to_string(o.slots));
  check(o.context >= 2, "batch engine: the context must hold at least 2 positions, got " +
                            std::to_string(o.context));
  check(o.prefill_chunk >= 1, "batch engine: the prefill chunk must be at least 1 token, got " +
                                  std::to_string(o.prefill_chunk));
  check(o.queue >= 0,
        "batch engine: the queue length must be >= 0, got " + std::to_string(o.queue));
  slots_.resize(o.slots);
  thread_ = std::thread([this] { loop(); });
}

BatchEngine::~BatchEngine() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  for (auto& j : slots_)
    if (j) finish(*j, FinishReason::Cancelled);
  for (auto& j : queue_) finish(*j, FinishReason::Cancelled);
}

uint64_t BatchEngine::submit(BatchRequest r) {
  const ModelConfig& c = model_.config();
  check(!r.prompt.empty(), "the prompt is empty (it needs at least a BOS token)");
  for (int32_t t : r.prompt)
    if (t < 0 || t >= c.vocab_size)
      throw Error("token id " + std::to_string(t) + " out of range [0, " +
                  std::to_string(c.vocab_size) + ")");
  check(r.max_new_tokens >= 0, "max_tokens must be >= 0, got " + std::to_string(r.max_new_tokens));
  check(r.min_new_tokens >= 0 && r.min_new_tokens <= r.max_new_tokens,
        "min_tokens must be between 0 and max_tokens (" + std::to_string(r.max_new_tokens) +
            "), got " + std::to_string(r.min_new_tokens));
  check(r.min_new_tokens == 0 || !r.constraint,
        "min_tokens and a JSON constraint exclude each other (a finished value allows only a stop "
        "token)");
  const auto need = static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens;
  if (need > opt_.context)
    throw Error("the prompt (" + std::to_string(r.prompt.size()) + " tokens) and max_tokens (" +
                std::to_string(r.max_new_tokens) + ") exceed the context of " +
                std::to_string(opt_.context) + " positions");
  for (int32_t t : r.suppress_tokens)
    if (t < 0 || t >= c.vocab_size)
      throw Error("suppressed token " + std::to_string(t) + " is outside the vocabulary");
  if (r.watermark) {
    const int32_t layer = r.watermark->config().router_layer;
    const auto n = static_cast<int32_t>(model_.moe_layers().size());
    check(layer >= 0 && layer < n, "watermark router layer " + std::to_string(layer) +
                                       " out of range (the model has " + std::to_string(n) +
                                       " MoE layers)");
  }
  std::unique_lock lock(mu_);
  // Refused only when every slot is taken (or promised to a queued request) and the queue is full.
  if (static_cast<int32_t>(queue_.size()) >= opt_.queue + (opt_.slots - occupied_))
    throw QueueFull("too many requests (" + std::to_string(occupied_) + " running, " +
                    std::to_string(queue_.size()) + " queued); try again later");
  const uint64_t id = next_id_++;
  queue_.push_back(std::make_unique<Job>(id, std::move(r)));  // the Sampler checks its options
  stats_.queued = static_cast<int32_t>(queue_.size());
  lock.unlock();
  wake_.notify_all();
  return id;
}

void BatchEngine::cancel(uint64_t id) {
  {
    std::lock_guard lock(mu_);
    cancels_.insert(id);
  }
  wake_.notify_all();
}

BatchEngine::Stats BatchEngine::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void BatchEngine::finish(Job& j, FinishReason why, const std::string& error) {
  if (j.req.on_done) j.req.on_done(why, error);
}

void BatchEngine::loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] {
      return stop_ || !queue_.empty() || !cancels_.empty() ||
             std::any_of(slots_.begin(), slots_.end(), [](const auto& j) { return j != nullptr; });
    });
    if (stop_) return;
    step(lock);
  }
}

void BatchEngine::step(std::unique_lock<std::mutex>& lock) {
  // Under the lock: admit queued requests, take the cancellations.
  for (int32_t s = 0; s < opt_.slots && !queue_.empty(); ++s)
    if (!slots_[s]) {
      slots_[s] = std::move(queue_.front());
      queue_.pop_front();
      ++occupied_;
    }
  std::unordered_set<uint64_t> cancels;
  cancels.swap(cancels_);
  std::vector<std::unique_ptr<Job>> dropped;
  for (auto it = queue_.begin(); it != queue_.end();)
    if (cancels.count((*it)->id)) {
      dropped.push_back(std::move(*it));
      it = queue_.erase(it);
    } else {
      ++it;
    }
  stats_.queued = static_cast<int32_t>(queue_.size());
  lock.unlock();

  uint64_t finished = dropped.size();
  for (auto& j : dropped) finish(*j, FinishReason::Cancelled);
  auto done = [&](int32_t s, FinishReason why, const std::string& error = {}) {
    finish(*slots_[s], why, error);
    slots_[s].reset();
    ++finished;
  };

  // The batch: a prompt chunk, or the last sampled token, of every running request.
  std::vector<BatchToken> batch;
  std::vector<int32_t> runs;      // the sequence of each run, in batch order
  std::vector<size_t> run_first;  // each run's first token in the batch
  bool all_logits = false;        // a prompt's log-probabilities are asked for in this step
  SlotObserver obs;
  obs.by_slot.assign(opt_.slots, nullptr);
  for (int32_t s = 0; s < opt_.slots; ++s) {
    if (!slots_[s]) continue;
    Job& j = *slots_[s];
    if (cancels.count(j.id)) {
      done(s, FinishReason::Cancelled);
      continue;
    }
    if (j.fed == 0) ctx_.clear(s);
    const auto plen = j.req.prompt.size();
    run_first.push_back(batch.size());
    if (j.fed < plen) {
      all_logits = all_logits || j.req.prompt_logprobs;
      const size_t n = std::min<size_t>(static_cast<size_t>(opt_.prefill_chunk), plen - j.fed);
      for (size_t i = 0; i < n; ++i)
        batch.push_back({j.req.prompt[j.fed + i], static_cast<int64_t>(j.fed + i), s});
      j.fed += n;
      j.sample = j.fed == plen;
    } else {
      batch.push_back({j.next, ctx_.size(s), s});
      j.sample = true;
    }
    obs.by_slot[s] = j.req.watermark.get();
    runs.push_back(s);
  }

  uint64_t sampled = 0;
  if (!batch.empty()) {
    ForwardOptions fo;
    fo.watch = obs.layers();
    if (!fo.watch.empty()) fo.observer = &obs;  // no watermark in the batch: nothing to read
    fo.all_logits = all_logits;
    std::vector<float> logits;
    try {
      logits = model_.decode(batch, ctx_, fo);
    } catch (const std::exception& e) {
      for (int32_t s : runs) done(s, FinishReason::Error, e.what());
      runs.clear();
    }
    const int64_t v = model_.config().vocab_size;
    for (size_t r = 0; r < runs.size(); ++r) {
      const int32_t s = runs[r];
      Job& j = *slots_[s];
      const size_t end = r + 1 < runs.size() ? run_first[r + 1] : batch.size();
      // The row of this run's last token: with every position's logits, that of its place.
      const size_t last = all_logits ? end - 1 : r;
      auto row_at = [&](size_t i) {
        return std::span<float>(logits.data() + static_cast<int64_t>(i) * v,
                                static_cast<size_t>(v));
      };
      if (all_logits && j.req.prompt_logprobs && j.req.on_logprobs) {
        // Prompt token p+1 from the logits at p, for the prompt tokens of this chunk.
        for (size_t i = run_first[r]; i < end; ++i) {
          const auto p = static_cast<size_t>(batch[i].position);
          if (p + 1 >= j.req.prompt.size() || batch[i].token != j.req.prompt[p]) continue;
          j.req.on_logprobs(
              logprobs_of(row_at(i), j.req.prompt[p + 1], std::max(j.req.logprobs, 0)));
        }
      }
      if (!j.sample) continue;
      if (j.generated >= j.req.max_new_tokens) {
        done(s, FinishReason::Length);
        continue;
      }
      std::span<float> row = row_at(last);
      std::vector<float> raw;  // the model's own distribution, for the token's log-probabilities
      if (j.req.logprobs >= 0 && j.req.on_logprobs) raw.assign(row.begin(), row.end());
      int32_t t;
      try {
        if (j.req.watermark) {
          // CTX-v1 lists are keyed by the token at the observed position too.
          j.req.watermark->set_previous_token(batch[end - 1].token);
          j.req.watermark->process(row);
        }
        forbid(row, j.req.suppress_tokens);
        if (j.generated < j.req.min_new_tokens) forbid(row, j.req.stop_tokens);
        if (j.req.constraint) j.req.constraint->mask(row);
        t = j.sampler.sample(row, j.req.watermark ? j.req.watermark->uniforms() : nullptr);
        if (j.req.constraint) j.req.constraint->accept(t);
      } catch (const std::exception& e) {
        done(s, FinishReason::Error, e.what());
        continue;
      }
      ++j.generated;
      ++sampled;
      if (!raw.empty()) j.req.on_logprobs(logprobs_of(raw, t, j.req.logprobs));
      if (j.req.on_token) j.req.on_token(t);
      if (std::find(j.req.stop_tokens.begin(), j.req.stop_tokens.end(), t) !=
          j.req.stop_tokens.end())
        done(s, FinishReason::Stop);
      else if (j.generated >= j.req.max_new_tokens)
        done(s, FinishReason::Length);
      else
        j.next = t;
    }
  }

  lock.lock();
  occupied_ = static_cast<int32_t>(
      std::count_if(slots_.begin(), slots_.end(), [](const auto& j) { return j != nullptr; }));
  stats_.running = occupied_;
  if (!batch.empty()) ++stats_.steps;
  stats_.tokens_in += batch.size();
  stats_.tokens_out += sampled;
  stats_.finished += finished;
}

}  // namespace epwa
