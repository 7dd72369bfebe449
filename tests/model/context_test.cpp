// Model / Context: one immutable Model runs several Contexts at once from several threads (also
// run under ThreadSanitizer by scripts/test.sh), a copied Context forks the sequence, and
// observations carry the MoE-layer index and honour the watched layers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

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
