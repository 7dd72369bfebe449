// Model / Context: one immutable Model runs several Contexts at once from several threads (also
// run under ThreadSanitizer by scripts/test.sh), a copied Context forks the sequence, and
// observations carry the MoE-layer index and honour the watched layers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/model.hpp"

namespace fs = std::filesystem;

namespace {

const fs::path kRef = fs::path(EPWA_TEST_DATA_DIR) / "ref";

struct Seen : epwa::RouterObserver {
  std::map<int32_t, int> per_layer;  // MoE layer -> observations
  void observe(const epwa::RouterObservation& o) override { ++per_layer[o.layer]; }
};

std::vector<float> run(const epwa::Model& m, const std::vector<int32_t>& tokens) {
  auto ctx = m.make_context(2);
  epwa::ForwardOptions fo;
  fo.all_logits = true;
  auto prompt = m.forward(std::span(tokens).first(tokens.size() - 3), ctx, fo);
  for (size_t i = tokens.size() - 3; i < tokens.size(); ++i) {
    const auto one = m.forward(std::span(tokens).subspan(i, 1), ctx);
    prompt.insert(prompt.end(), one.begin(), one.end());
  }
  return prompt;
}

// Two threads, each with its own Contexts, on one Model: the same results as one thread alone.
TEST(Context, TwoThreadsShareOneModel) {
  for (const char* name : {"qwen2moe", "gqa"}) {
    auto model = epwa::Model::load(kRef / name);
    const std::vector<int32_t> a{1, 5, 9, 200, 17, 4, 88, 3, 12}, b{1, 300, 2, 2, 41, 150, 7, 9};
    const auto want_a = run(*model, a), want_b = run(*model, b);
    std::vector<float> got_a, got_b;
    std::thread ta([&] {
      for (int r = 0; r < 3; ++r) got_a = run(*model, a);
    });
    std::thread tb([&] {
      for (int r = 0; r < 3; ++r) got_b = run(*model, b);
    });
    ta.join();
    tb.join();
    EXPECT_EQ(got_a, want_a) << name;
    EXPECT_EQ(got_b, want_b) << name;
  }
}

// A copied context continues the sequence independently of the original.
TEST(Context, CopyForksTheSequence) {
  auto model = epwa::Model::load(kRef / "olmoe");
  auto ctx = model->make_context();
  const std::vector<int32_t> prompt{1, 10, 20, 30};
  model->forward(prompt, ctx);
  epwa::Context fork = ctx;
  const int32_t x = 5, y = 6;
  const auto fx = model->forward({&x, 1}, fork);
  const auto cy = model->forward({&y, 1}, ctx);
  EXPECT_EQ(fork.size(), 5);
  EXPECT_EQ(ctx.size(), 5);
  auto fresh = model->make_context();
  model->forward(prompt, fresh);
  EXPECT_EQ(model->forward({&x, 1}, fresh), fx);  // the fork saw only its own token
  EXPECT_NE(fx, cy);
}

TEST(Context, BelongsToItsModel) {
  auto a = epwa::Model::load(kRef / "olmoe");
  auto b = epwa::Model::load(kRef / "olmoe");
  auto ctx = a->make_context();
  const int32_t t = 1;
  EXPECT_THROW(b->forward({&t, 1}, ctx), epwa::Error);
}

// Observations are numbered among MoE layers (Qwen2-MoE reference: layer 1 is dense), only the
// watched ones are reported, and stop_after_router counts MoE layers too.
TEST(Context, ObservationsUseMoeLayerIndex) {
  auto model = epwa::Model::load(kRef / "qwen2moe");
  EXPECT_THAT(model->moe_layers(), ::testing::ElementsAre(0, 2));
  const std::vector<int32_t> tokens{1, 7, 8, 9};
  Seen all, watched, stopped;
  auto c1 = model->make_context();
  epwa::ForwardOptions fo;
  fo.observer = &all;
  model->forward(tokens, c1, fo);
  EXPECT_EQ(all.per_layer, (std::map<int32_t, int>{{0, 4}, {1, 4}}));
  auto c2 = model->make_context();
  fo.observer = &watched;
  fo.watch = {1};
  model->forward(tokens, c2, fo);
  EXPECT_EQ(watched.per_layer, (std::map<int32_t, int>{{1, 4}}));
  auto c3 = model->make_context();
  fo.observer = &stopped;
  fo.watch = {};
  fo.stop_after_router = 1;
  EXPECT_TRUE(model->forward(tokens, c3, fo).empty());
  EXPECT_EQ(stopped.per_layer, (std::map<int32_t, int>{{0, 4}, {1, 4}}));
  fo.stop_after_router = 2;  // only two MoE layers
  auto c4 = model->make_context();
  EXPECT_THROW(model->forward(tokens, c4, fo), epwa::Error);
  EXPECT_EQ(model->router_f32(1).size(), 8u * 64u);
  EXPECT_THROW(model->router_f32(2), epwa::Error);
}

}  // namespace

namespace {

double rel_diff(std::span<const float> a, std::span<const float> b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i)
    num += (double{a[i]} - b[i]) * (a[i] - b[i]), den += double{b[i]} * b[i];
  return std::sqrt(num / den);
}

struct PerSeq : epwa::RouterObserver {
  std::map<std::pair<int32_t, int64_t>, std::vector<int32_t>>
      topk;  // (sequence, position) -> experts
  void observe(const epwa::RouterObservation& o) override {
    if (o.layer == 0) topk[{o.sequence, o.position}] = {o.topk.begin(), o.topk.end()};
  }
};

// Three sequences run as one batch (prompts of different lengths, then one token each per step)
// give each sequence what it gets alone: the same routing and logits up to the rounding of batched
// products, the same greedy tokens.
TEST(Context, BatchOfSequencesMatchesEachAlone) {
  for (const char* name : {"qwen3moe", "gqa"}) {
    SCOPED_TRACE(name);
    auto model = epwa::Model::load(kRef / name);
    const int64_t V = model->config().vocab_size;
    const std::vector<std::vector<int32_t>> prompts{
        {1, 5, 9, 200}, {1, 77}, {1, 300, 2, 41, 150, 7}};
    ASSERT_EQ(epwa::Context(*model, 4, 3).sequences(), 3);
    epwa::Context ctx(*model, 4, 3);
    PerSeq seen_batch;
    epwa::ForwardOptions fo;
    fo.observer = &seen_batch;
    std::vector<epwa::BatchToken> batch;
    for (int32_t q = 0; q < 3; ++q)
      for (size_t p = 0; p < prompts[q].size(); ++p)
        batch.push_back({prompts[q][p], static_cast<int64_t>(p), q});
    auto logits = model->decode(batch, ctx, fo);  // the last token of each sequence
    ASSERT_EQ(logits.size(), static_cast<size_t>(3 * V));
    std::vector<std::vector<int32_t>> greedy(3);
    for (int step = 0; step < 4; ++step) {
      batch.clear();
      for (int32_t q = 0; q < 3; ++q) {
        const float* row = logits.data() + q * V;
        greedy[q].push_back(static_cast<int32_t>(std::max_element(row, row + V) - row));
        batch.push_back({greedy[q].back(), ctx.size(q), q});
      }
      logits = model->decode(batch, ctx, fo);
    }
    for (int32_t q = 0; q < 3; ++q) {
      auto alone = model->make_context();
      PerSeq seen_alone;
      epwa::ForwardOptions fa;
      fa.observer = &seen_alone;
      auto l = model->forward(prompts[q], alone, fa);
      std::vector<int32_t> g;
      for (int step = 0; step < 4; ++step) {
        g.push_back(static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin()));
        const int32_t t = g.back();
        const auto next = model->forward({&t, 1}, alone, fa);
        if (step == 3) {
          EXPECT_LE(rel_diff(next, {logits.data() + q * V, static_cast<size_t>(V)}), 1e-5);
        }
        l = next;
      }
      EXPECT_EQ(g, greedy[q]) << "sequence " << q;
      EXPECT_EQ(ctx.size(q), static_cast<int64_t>(prompts[q].size() + 4));
      // Its observations carry its sequence id and the positions and experts it has alone.
      for (int64_t p = 0; p < ctx.size(q); ++p)
        EXPECT_EQ(seen_batch.topk.at({q, p}), seen_alone.topk.at({0, p})) << q << " " << p;
    }
    EXPECT_EQ(seen_batch.topk.size(), (4 + 2 + 6) + 3 * 4u);
  }
}

TEST(Context, DecodeRejectsBadBatches) {
  auto model = epwa::Model::load(kRef / "olmoe");
  epwa::Context ctx(*model, 8, 2);
  using B = std::vector<epwa::BatchToken>;
  auto err = [&](const B& b) {
    try {
      model->decode(b, ctx);
    } catch (const epwa::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(err({{1, 0, 2}}), ::testing::HasSubstr("sequence 2 out of range"));
  EXPECT_THAT(err({{1, 1, 0}}), ::testing::HasSubstr("expects position 0, got 1"));
  EXPECT_THAT(err({{1, 0, 0}, {1, 0, 1}, {2, 1, 0}}), ::testing::HasSubstr("not consecutive"));
  EXPECT_THAT(err({}), ::testing::HasSubstr("empty batch"));
  EXPECT_EQ(ctx.size(0), 0);
  EXPECT_THROW(ctx.size(2), epwa::Error);
  EXPECT_THROW(epwa::Context(*model, 8, 0), epwa::Error);
}

}  // namespace

namespace {

// Positions past max_position_embeddings are refused, in one prompt or token by token.
TEST(Context, RefusesPositionsBeyondTheModelsContext) {
  auto model = epwa::Model::load(kRef / "gqa");
  const int64_t ctx = model->config().max_position_embeddings;
  std::vector<int32_t> tokens(ctx, 5);
  auto c = model->make_context(16);
  EXPECT_NO_THROW(model->forward(tokens, c));  // exactly the context
  const int32_t one[1] = {5};
  try {
    model->forward(one, c);
    ADD_FAILURE() << "position " << ctx << " was run";
  } catch (const epwa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("beyond the model's context of " + std::to_string(ctx)),
              std::string::npos)
        << e.what();
  }
  tokens.push_back(5);
  auto fresh = model->make_context(16);
  EXPECT_THROW(model->forward(tokens, fresh), epwa::Error);
}

}  // namespace
