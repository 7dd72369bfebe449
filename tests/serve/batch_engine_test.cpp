// Continuous batching against one request at a time: the same tokens (greedy, seeded sampling,
// watermarked), whatever the batch around a request; chunked prompts; cancellation; the queue
// limit; bad requests.
#include "epwa/batch_engine.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>

#include "epwa/session.hpp"

namespace fs = std::filesystem;

namespace {

const fs::path kRef = fs::path(EPWA_TEST_DATA_DIR) / "ref";

struct Outcome {
  std::vector<int32_t> tokens;
  epwa::FinishReason why = epwa::FinishReason::Error;
  std::string error;
};

// Submits `r` and returns a future of what the engine reported.
std::future<Outcome> submit(epwa::BatchEngine& e, epwa::BatchRequest r, uint64_t* id = nullptr) {
  auto out = std::make_shared<Outcome>();
  auto done = std::make_shared<std::promise<Outcome>>();
  r.on_token = [out](int32_t t) { out->tokens.push_back(t); };
  r.on_done = [out, done](epwa::FinishReason why, const std::string& error) {
    out->why = why;
    out->error = error;
    done->set_value(*out);
  };
  const uint64_t i = e.submit(std::move(r));
  if (id) *id = i;
  return done->get_future();
}

std::vector<int32_t> prompt(int64_t n, int32_t salt) {
  std::vector<int32_t> t{1};
  for (int64_t i = 1; i < n; ++i)
    t.push_back(static_cast<int32_t>(3 + (i * 37 + salt * 101) % 300));
  return t;
}

TEST(BatchEngine, BatchedRequestsMatchEachAlone) {
  auto model = epwa::Model::load(kRef / "qwen3moe");
  const auto lists = epwa::make_green_lists(*model, "batch-key", 0.5);
  epwa::WatermarkConfig wc;
  wc.router_layer = epwa::model_router_layer(*model, -1);
  // Prompts shorter and longer than the chunk (5), greedy and sampled, some watermarked.
  struct Spec {
    int64_t len;
    float temperature;
    bool watermark;
  };
  const std::vector<Spec> specs = {{3, 0, false},   {17, 0.8f, false}, {9, 0, true},
                                   {1, 1.0f, true}, {12, 0.7f, true},  {6, 0, false}};
  auto request = [&](size_t i) {
    epwa::BatchRequest r;
    r.prompt = prompt(specs[i].len, static_cast<int32_t>(i));
    r.max_new_tokens = 10;
    r.sampling.temperature = specs[i].temperature;
    r.sampling.seed = 1000 + i;
    if (specs[i].watermark) r.watermark = std::make_unique<epwa::WatermarkProcessor>(wc, lists);
    return r;
  };
  epwa::BatchEngine batched(*model, {.slots = 4, .context = 64, .prefill_chunk = 5, .queue = 8});
  std::vector<std::future<Outcome>> futures;
  for (size_t i = 0; i < specs.size(); ++i) futures.push_back(submit(batched, request(i)));
  for (size_t i = 0; i < specs.size(); ++i) {
    const Outcome got = futures[i].get();
    // The same request through the one-request generation path.
    epwa::GenerateOptions go;
    go.max_new_tokens = 10;
    go.sampling.temperature = specs[i].temperature;
    go.sampling.seed = 1000 + i;
    const auto p = prompt(specs[i].len, static_cast<int32_t>(i));
    std::vector<int32_t> want;
    if (specs[i].watermark) {
      epwa::Watermarker wm(*model, lists, wc);
      want = wm.generate(*model, p, go);
    } else {
      want = epwa::generate(*model, p, go);
    }
    EXPECT_EQ(got.tokens, want) << "request " << i;
    EXPECT_EQ(got.why, epwa::FinishReason::Length) << got.error;
  }
  const auto st = batched.stats();
  EXPECT_EQ(st.finished, specs.size());
  EXPECT_EQ(st.tokens_out, 10 * specs.size());
  EXPECT_EQ(st.running, 0);
  // Prompts entered in chunks of at most 5 alongside the decoding requests: more steps than the
  // longest request alone needs, fewer than running them one after another.
  EXPECT_GE(st.steps, 4u + 9u);
  EXPECT_LT(st.steps, 6u * 10u);
}

TEST(BatchEngine, StopTokensAndZeroNewTokens) {
  auto model = epwa::Model::load(kRef / "gqa");
  epwa::BatchEngine e(*model, {.slots = 2, .context = 32});
  epwa::GenerateOptions go;
  go.max_new_tokens = 6;
  const auto p = prompt(4, 1);
  const auto greedy = epwa::generate(*model, p, go);
  epwa::BatchRequest r;
  r.prompt = p;
  r.max_new_tokens = 6;
  r.stop_tokens = {greedy[2]};
  const Outcome stopped = submit(e, std::move(r)).get();
  const auto until = std::find(greedy.begin(), greedy.end(), greedy[2]) + 1;
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(greedy.begin(), until));
  EXPECT_EQ(stopped.why, epwa::FinishReason::Stop);
  epwa::BatchRequest z;
  z.prompt = p;
  z.max_new_tokens = 0;
  const Outcome none = submit(e, std::move(z)).get();
  EXPECT_TRUE(none.tokens.empty());
  EXPECT_EQ(none.why, epwa::FinishReason::Length);
}

TEST(BatchEngine, CancelQueueLimitAndBadRequests) {
  auto model = epwa::Model::load(kRef / "gqa");
  epwa::BatchEngine e(*model, {.slots = 1, .context = 600, .prefill_chunk = 1, .queue = 1});
  // One request holds the only slot: it is held inside its first token's callback until both
  // cancellations are in. One request waits, the third is refused.
  std::promise<void> first, release;
  auto released = release.get_future().share();
  auto a_done = std::make_shared<std::promise<Outcome>>();
  auto a_out = std::make_shared<Outcome>();
  epwa::BatchRequest a;
  a.prompt = prompt(8, 2);
  a.max_new_tokens = 500;
  a.on_token = [&, a_out, released](int32_t t) {
    a_out->tokens.push_back(t);
    if (a_out->tokens.size() == 1) {
      first.set_value();
      released.wait();
    }
  };
  a.on_done = [a_out, a_done](epwa::FinishReason why, const std::string&) {
    a_out->why = why;
    a_done->set_value(*a_out);
  };
  const uint64_t ida = e.submit(std::move(a));
  auto fa = a_done->get_future();
  first.get_future().wait();
  epwa::BatchRequest b;
  b.prompt = prompt(3, 3);
  b.max_new_tokens = 2;
  uint64_t idb = 0;
  auto fb = submit(e, std::move(b), &idb);
  epwa::BatchRequest c;
  c.prompt = prompt(3, 4);
  EXPECT_THROW(e.submit(std::move(c)), epwa::QueueFull);
  e.cancel(idb);  // cancelled while queued
  e.cancel(ida);  // cancelled while running
  release.set_value();
  EXPECT_EQ(fb.get().why, epwa::FinishReason::Cancelled);
  const Outcome oa = fa.get();
  EXPECT_EQ(oa.why, epwa::FinishReason::Cancelled);
  EXPECT_EQ(oa.tokens.size(), 1u);
  // The slot is free again.
  epwa::BatchRequest d;
  d.prompt = prompt(3, 5);
  d.max_new_tokens = 2;
  EXPECT_EQ(submit(e, std::move(d)).get().tokens.size(), 2u);

  auto bad = [&](auto edit) {
    epwa::BatchRequest r;
    r.prompt = prompt(3, 6);
    edit(r);
    return r;
  };
  EXPECT_THROW(e.submit(bad([](auto& r) { r.prompt.clear(); })), epwa::Error);
  EXPECT_THROW(e.submit(bad([](auto& r) { r.prompt.push_back(100000); })), epwa::Error);
  EXPECT_THROW(e.submit(bad([](auto& r) { r.max_new_tokens = 598; })), epwa::Error);
  EXPECT_THROW(e.submit(bad([](auto& r) { r.max_new_tokens = -1; })), epwa::Error);
  EXPECT_THROW(e.submit(bad([](auto& r) { r.sampling.top_p = 0; })), epwa::Error);
  EXPECT_THROW(epwa::BatchEngine(*model, {.slots = 0}), epwa::Error);
}

// Destroying the engine ends every request it holds (none is left without an answer).
TEST(BatchEngine, DestructionCancelsWhatIsLeft) {
  auto model = epwa::Model::load(kRef / "gqa");
  std::vector<std::future<Outcome>> f;
  {
    epwa::BatchEngine e(*model, {.slots = 1, .context = 600, .prefill_chunk = 1, .queue = 4});
    for (int i = 0; i < 3; ++i) {
      epwa::BatchRequest r;
      r.prompt = prompt(50, i);
      r.max_new_tokens = 500;
      f.push_back(submit(e, std::move(r)));
    }
  }
  for (auto& x : f) EXPECT_EQ(x.get().why, epwa::FinishReason::Cancelled);
}

}  // namespace
