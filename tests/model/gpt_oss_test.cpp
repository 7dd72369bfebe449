// GPT-OSS's engine parts beyond the reference numbers (parity_test.cpp): the sliding-window layers'
// KV cache holds only the window, prompts split anywhere give the logits of one pass (the ring of
// the sliding layer across batches), and truncation that the ring cannot undo is refused.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/model.hpp"

namespace fs = std::filesystem;

namespace {

const fs::path kGptOss = fs::path(EPWA_TEST_DATA_DIR) / "ref" / "gptoss";

std::vector<int32_t> prompt(size_t n) {
  std::vector<int32_t> t{1};
  for (size_t i = 1; i < n; ++i) t.push_back(static_cast<int32_t>(3 + (i * 37) % 300));
  return t;
}

double max_rel(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num = std::max(num, std::abs(double{a[i]} - b[i]));
    den = std::max(den, std::abs(double{b[i]}));
  }
  return num / den;
}

// Layer 0 slides over 8 positions, layer 1 attends to all: after 40 positions layer 0 still holds
// 8 rows of keys and values, layer 1 its whole capacity.
TEST(GptOss, SlidingLayerCacheHoldsOnlyTheWindow) {
  auto model = epwa::Model::load(kGptOss);
  const epwa::ModelConfig& c = model->config();
  ASSERT_EQ(c.sliding_window, 8);
  ASSERT_EQ(c.layer_window(0), 8);
  ASSERT_EQ(c.layer_window(1), 0);
  const int64_t row = 2 * int64_t{c.num_kv_heads} * c.head_dim * 4;  // k and v, f32
  auto ctx = model->make_context(64);
  const auto tokens = prompt(40);
  model->forward(tokens, ctx);
  EXPECT_EQ(ctx.kv_bytes(0), 8 * row);
  EXPECT_EQ(ctx.kv_bytes(1), 64 * row);
  std::printf("KV cache of %lld positions: sliding layer %lld bytes, full layer %lld bytes\n",
              static_cast<long long>(ctx.size()), static_cast<long long>(ctx.kv_bytes(0)),
              static_cast<long long>(ctx.kv_bytes(1)));
}

// The same 30 tokens in one pass, token by token, and in batches of 3, 5 and 11 (shorter and
// longer than the window, starting anywhere in the ring): the same logits.
TEST(GptOss, BatchesAcrossTheWindowEqualOnePass) {
  auto model = epwa::Model::load(kGptOss);
  const int64_t v = model->config().vocab_size;
  const auto tokens = prompt(30);
  epwa::ForwardOptions all;
  all.all_logits = true;
  auto one = model->make_context();
  const auto want = model->forward(tokens, one, all);
  for (size_t chunk : {1, 3, 5, 11}) {
    SCOPED_TRACE("batches of " + std::to_string(chunk));
    auto ctx = model->make_context(4);  // grows on the way
    std::vector<float> got;
    for (size_t i = 0; i < tokens.size(); i += chunk) {
      const auto part = std::span(tokens).subspan(i, std::min(chunk, tokens.size() - i));
      const auto l = model->forward(part, ctx, all);
      got.insert(got.end(), l.begin(), l.end());
    }
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < tokens.size(); ++i)
      EXPECT_LE(max_rel(got.data() + i * v, want.data() + i * v, v), 1e-5) << "position " << i;
  }
}

// Beyond a full window the ring has overwritten what dropping more than one position would need.
TEST(GptOss, TruncationBeyondTheRingIsRefused) {
  auto model = epwa::Model::load(kGptOss);
  auto ctx = model->make_context();
  model->forward(prompt(20), ctx);
  EXPECT_THROW(ctx.truncate(15), epwa::Error);
  ctx.truncate(19);  // one position: the ring still holds the window before it
  EXPECT_EQ(ctx.size(), 19);
  ctx.truncate(0);
  EXPECT_EQ(ctx.size(), 0);
}

}  // namespace

#include "epwa/generate.hpp"
#include "epwa/make_model.hpp"

namespace {

// A random GPT-OSS written by make-model (bf16, the per-expert names epwa writes, biases as bf16)
// loads back with its config, runs, and decodes past its sliding window.
TEST(GptOss, RandomModelRoundTripsAndGenerates) {
  const fs::path dir = fs::temp_directory_path() / "epwa-tiny-gptoss";
  fs::remove_all(dir);
  const epwa::ModelConfig c = epwa::shape_config("tiny-gptoss");
  epwa::write_random_hf(c, 3, epwa::DType::BF16, dir);
  auto model = epwa::Model::load(dir);
  EXPECT_EQ(model->config().sliding_layers, c.sliding_layers);
  EXPECT_EQ(model->config().yarn.factor, 32.0f);
  EXPECT_EQ(model->config().parameter_count(), c.parameter_count());
  epwa::GenerateOptions go;
  go.max_new_tokens = 20;
  const auto out = epwa::generate(*model, prompt(6), go);
  EXPECT_EQ(out.size(), 20u);
  model.reset();  // it maps the checkpoint: Windows cannot delete a mapped file
  fs::remove_all(dir);
}

}  // namespace
