// The engine's speed work keeps the results: decoding token by token (fused jobs) matches a batched
// prompt (per-matrix products) on quantized weights, gray-box detection stops at the router and
// never touches the output head, the platform's large buffers behave, and min_new_tokens holds
// the stop tokens back.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <utility>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/generate.hpp"
#include "epwa/load_options.hpp"
#include "epwa/memory.hpp"
#include "epwa/model.hpp"

namespace fs = std::filesystem;

namespace {

const fs::path kGqa = fs::path(EPWA_TEST_DATA_DIR) / "ref" / "gqa";

// Every router decision by (layer, position).
struct Routes : epwa::RouterObserver {
  std::map<std::pair<int32_t, int64_t>, std::vector<int32_t>> topk;
  void observe(const epwa::RouterObservation& o) override {
    topk[{o.layer, o.position}] = {o.topk.begin(), o.topk.end()};
  }
};

std::unique_ptr<epwa::Model> load_quantized(epwa::LoadMode mode) {
  epwa::LoadOptions o;
  o.mode = mode;
  o.use_cache = false;
  o.warn = [](const std::string&) {};
  return epwa::Model::load(kGqa, o);
}

// Each decoded token runs the fused jobs (Q/K/V together, all experts' gate+up with the SwiGLU, all
// downs); a prompt runs one product per matrix and expert. Both must give the same logits (up to
// the float router's matmul-vs-matvec rounding) and the same routing, on 4-bit and 8-bit weights.
TEST(EngineDecode, FusedJobsMatchTheBatchedPromptOnQuantizedWeights) {
  for (epwa::LoadMode mode : {epwa::LoadMode::Bits4, epwa::LoadMode::Bits8}) {
    auto model = load_quantized(mode);
    const std::vector<int32_t> tokens{1, 17, 4, 300, 42, 42, 9, 250, 3, 77};
    Routes batched_routes, decoded_routes;
    auto c1 = model->make_context();
    epwa::ForwardOptions all;
    all.all_logits = true;
    all.observer = &batched_routes;
    const auto batched = model->forward(tokens, c1, all);
    auto c2 = model->make_context(3);  // grows twice on the way
    epwa::ForwardOptions one_opt;
    one_opt.observer = &decoded_routes;
    const int64_t v = model->config().vocab_size;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const auto one = model->forward(std::span(tokens).subspan(i, 1), c2, one_opt);
      ASSERT_EQ(one.size(), static_cast<size_t>(v));
      double num = 0, den = 0;
      for (int64_t t = 0; t < v; ++t) {
        const double diff = double{one[t]} - batched[i * v + t];
        num += diff * diff;
        den += double{batched[i * v + t]} * batched[i * v + t];
      }
      EXPECT_LE(std::sqrt(num / den), 1e-4)
          << "mode " << static_cast<int>(mode) << " position " << i;
    }
    EXPECT_EQ(decoded_routes.topk, batched_routes.topk);
  }
}

struct LayerCounter : epwa::RouterObserver {
  std::vector<int> per_layer = std::vector<int>(8, 0);
  void observe(const epwa::RouterObservation& o) override { ++per_layer.at(o.layer); }
};

// Gray-box detection: with the output head and every layer after the router's made unreadable
// (a byte short), the full forward fails but a stop_after_router pass runs, reports only the layers
// up to the router's, and returns no logits.
TEST(EngineDetect, StopAfterRouterNeverReadsLaterLayersOrTheHead) {
  auto model = epwa::Model::load(kGqa);
  ASSERT_GE(model->config().num_layers, 2);
  epwa::ModelWeights w = model->weights();
  w.head.data = w.head.data.first(w.head.data.size() - 1);
  for (size_t l = 1; l < w.layers.size(); ++l) {
    epwa::LayerWeights& L = w.layers[l];
    L.wq.data = L.wq.data.first(L.wq.data.size() - 1);
    for (auto& e : L.w1) e.data = e.data.first(e.data.size() - 1);
  }
  std::shared_ptr<const epwa::Model> keep(std::move(model));
  epwa::Model broken(keep->config(), std::move(w), keep, keep->source(), keep->format());
  const std::vector<int32_t> tokens{1, 17, 4, 300};
  auto cache = broken.make_context();
  EXPECT_THROW(broken.forward(tokens, cache), epwa::Error);

  LayerCounter rec;
  epwa::ForwardOptions fo;
  fo.observer = &rec;
  fo.stop_after_router = 0;
  auto c2 = broken.make_context();
  EXPECT_TRUE(broken.forward(tokens, c2, fo).empty());
  EXPECT_EQ(rec.per_layer[0], 4);
  EXPECT_EQ(rec.per_layer[1], 0);
}

TEST(LargeBuffer, ZeroFilledAlignedAndMovable) {
  epwa::LargeBuffer small(100);
  ASSERT_NE(small.data(), nullptr);
  EXPECT_EQ(small.size(), 100u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data()) % 4096, 0u);
  epwa::LargeBuffer big(5 << 20);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data()) % (2 << 20), 0u);
  auto* p = static_cast<unsigned char*>(big.data());
  for (size_t i = 0; i < big.size(); i += 4093) ASSERT_EQ(p[i], 0) << i;
  p[big.size() - 1] = 7;
  epwa::LargeBuffer moved(std::move(big));
  EXPECT_EQ(big.data(), nullptr);
  EXPECT_EQ(static_cast<unsigned char*>(moved.data())[moved.size() - 1], 7);
  EXPECT_EQ(epwa::LargeBuffer().data(), nullptr);
}

// A copied cache carries its positions: continuing from the copy gives the same logits.
TEST(EngineCache, CopyContinuesLikeTheOriginal) {
  auto model = load_quantized(epwa::LoadMode::Bits8);
  const std::vector<int32_t> prompt{1, 17, 4, 300, 42};
  auto cache = model->make_context(2);
  model->forward(prompt, cache);
  epwa::Context copy = cache;
  EXPECT_EQ(copy.size(), 5);
  int32_t tok = 9;
  EXPECT_EQ(model->forward({&tok, 1}, cache), model->forward({&tok, 1}, copy));
}

}  // namespace

namespace {

// min_new_tokens keeps the stop tokens out of the first N tokens, exactly as suppressing them
// would, then lets them end the text again.
TEST(EngineGenerate, MinNewTokensHoldsTheStopTokensBack) {
  auto model = epwa::Model::load(kGqa);
  const std::vector<int32_t> prompt{1, 17, 4, 300, 42};
  epwa::GenerateOptions go;
  go.max_new_tokens = 12;
  const std::vector<int32_t> free = epwa::generate(*model, prompt, go);
  ASSERT_EQ(free.size(), 12u);
  go.stop_tokens = {free[2]};  // greedy ends at index 2 (or earlier, if it came before)
  const auto stopped = epwa::generate(*model, prompt, go);
  ASSERT_LE(stopped.size(), 3u);
  EXPECT_EQ(stopped.back(), free[2]);
  go.min_new_tokens = 8;
  const auto held = epwa::generate(*model, prompt, go);
  ASSERT_GE(held.size(), 8u);
  for (size_t i = 0; i < 8; ++i) EXPECT_NE(held[i], free[2]) << i;
  epwa::GenerateOptions suppressed = go;
  suppressed.min_new_tokens = 0;
  suppressed.stop_tokens = {};
  suppressed.suppress_tokens = {free[2]};
  suppressed.max_new_tokens = 8;
  EXPECT_EQ(std::vector<int32_t>(held.begin(), held.begin() + 8),
            epwa::generate(*model, prompt, suppressed));
  go.min_new_tokens = -1;
  EXPECT_THROW(epwa::generate(*model, prompt, go), epwa::Error);
}

}  // namespace
