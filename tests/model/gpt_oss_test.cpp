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

#include <cstdio>
#include <utility>

#include "epwa/export.hpp"
#include "epwa/gguf.hpp"
#include "epwa/load_options.hpp"

namespace {

const fs::path kGptOssMxfp4 = fs::path(EPWA_TEST_DATA_DIR) / "ref" / "gptoss_mxfp4";

std::vector<float> all_logits(const epwa::Model& m, const std::vector<int32_t>& tokens) {
  auto ctx = m.make_context();
  epwa::ForwardOptions all;
  all.all_logits = true;
  return m.forward(tokens, ctx, all);
}

// The release's MXFP4 experts load as MXFP4 (17 bytes per 32 weights, not bf16), are written to
// GGUF as ggml's MXFP4 (type 39) stacks with llama.cpp's gpt-oss names, and that file, and the one
// quantize writes from it, give the safetensors load's logits.
TEST(GptOss, Mxfp4ExpertsStayMxfp4ThroughGguf) {
  auto hf = epwa::Model::load(kGptOssMxfp4);
  const epwa::ModelConfig& c = hf->config();
  const auto& l0 = hf->weights().layers[0];
  ASSERT_EQ(l0.w1[0].dtype, epwa::DType::MXFP4);
  EXPECT_EQ(l0.w2[0].dtype, epwa::DType::MXFP4);
  EXPECT_EQ(static_cast<int64_t>(l0.w1[0].data.size()),
            c.expert_intermediate_size * c.hidden_size / 32 * 17);
  const fs::path gguf = fs::temp_directory_path() / "epwa-gptoss-mxfp4.gguf";
  const fs::path again = fs::temp_directory_path() / "epwa-gptoss-mxfp4-again.gguf";
  epwa::convert_hf_to_gguf(kGptOssMxfp4, gguf, {});
  {
    const epwa::GgufFile f(gguf);
    EXPECT_EQ(f.get_string("general.architecture"), "gpt-oss");
    EXPECT_EQ(f.get_u32("gpt-oss.attention.sliding_window"),
              static_cast<uint32_t>(c.sliding_window));
    EXPECT_EQ(f.get_u32("gpt-oss.expert_feed_forward_length"),
              static_cast<uint32_t>(c.expert_intermediate_size));
    const epwa::TensorView& gate = f.tensor("blk.0.ffn_gate_exps.weight");
    EXPECT_EQ(gate.dtype, epwa::DType::MXFP4);
    EXPECT_EQ(gate.shape,
              (std::vector<int64_t>{c.num_experts, c.expert_intermediate_size, c.hidden_size}));
    EXPECT_EQ(f.tensor("blk.0.ffn_up_exps.bias").shape,
              (std::vector<int64_t>{c.num_experts, c.expert_intermediate_size}));
    EXPECT_EQ(f.tensor("blk.1.attn_sinks.weight").shape, (std::vector<int64_t>{c.num_heads}));
    EXPECT_NE(f.find_tensor("blk.0.post_attention_norm.weight"), nullptr);
    EXPECT_NE(f.find_tensor("blk.0.ffn_gate_inp.bias"), nullptr);
    EXPECT_EQ(f.find_tensor("blk.0.ffn_norm.weight"), nullptr);
    EXPECT_EQ(f.get_string("gpt-oss.rope.scaling.type"), "yarn");
  }
  auto from_gguf = epwa::Model::load(gguf);
  EXPECT_EQ(from_gguf->config().sliding_layers, c.sliding_layers);
  EXPECT_EQ(from_gguf->config().yarn.truncate, c.yarn.truncate);
  EXPECT_EQ(from_gguf->config().rope_attention_factor(), c.rope_attention_factor());
  EXPECT_EQ(from_gguf->config().router_rule(), c.router_rule());
  EXPECT_EQ(from_gguf->weights().layers[1].w3[2].dtype, epwa::DType::MXFP4);
  const auto tokens = prompt(12);
  const auto want = all_logits(*hf, tokens);
  const auto got = all_logits(*from_gguf, tokens);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LE(max_rel(got.data(), want.data(), static_cast<int64_t>(want.size())), 1e-5);
  // And back through the quantize path (same types): the same bytes, the same logits.
  epwa::save_model_gguf(*from_gguf, {}, again);
  const auto back = all_logits(*epwa::Model::load(again), tokens);
  EXPECT_EQ(back, got);
  // From MXFP4 to other types. F32: its values exactly (only the kernels' rounding differs).
  // Q8_0 (every matrix, and 8-bit activations): close.
  for (auto [type, bound] : {std::pair{epwa::DType::F32, 1e-5}, {epwa::DType::Q8_0, 0.5}}) {
    epwa::GgufExportOptions o;
    o.matrix_type = type;
    epwa::save_model_gguf(*from_gguf, o, again);
    auto m = epwa::Model::load(again);
    EXPECT_EQ(m->weights().layers[0].w1[0].dtype, type);
    const auto l = all_logits(*m, tokens);
    const double err = max_rel(l.data(), want.data(), static_cast<int64_t>(want.size()));
    std::printf("MXFP4 -> %s: max rel %.3g\n", std::string(epwa::dtype_name(type)).c_str(), err);
    EXPECT_LE(err, bound) << epwa::dtype_name(type);
  }
  fs::remove(gguf);
  fs::remove(again);
}

}  // namespace

#include "epwa/quant_preset.hpp"

namespace {

// `epwa quantize --type mxfp4_moe` (llama.cpp's MXFP4_MOE): expert stacks MXFP4, the other
// matrices Q8_0, norms and routers f32, file type 38; the file loads and generates.
TEST(GptOss, Mxfp4MoePresetWritesLlamaCppsMix) {
  const fs::path dir = fs::temp_directory_path() / "epwa-tiny-gptoss-mix";
  const fs::path gguf = fs::temp_directory_path() / "epwa-tiny-gptoss-mxfp4-moe.gguf";
  fs::remove_all(dir);
  epwa::write_random_hf(epwa::shape_config("tiny-gptoss"), 5, epwa::DType::BF16, dir);
  auto bf16 = epwa::Model::load(dir);
  epwa::save_model_gguf_preset(*bf16, "mxfp4_moe", {}, gguf);
  {
    const epwa::GgufFile f(gguf);
    EXPECT_EQ(f.get_u32("general.file_type"), 38u);
    EXPECT_EQ(f.tensor("blk.1.ffn_down_exps.weight").dtype, epwa::DType::MXFP4);
    EXPECT_EQ(f.tensor("blk.1.attn_q.weight").dtype, epwa::DType::Q8_0);
    EXPECT_EQ(f.tensor("output.weight").dtype, epwa::DType::Q8_0);
    EXPECT_EQ(f.tensor("blk.1.ffn_gate_inp.weight").dtype, epwa::DType::F32);
    EXPECT_EQ(f.tensor("blk.1.ffn_down_exps.bias").dtype, epwa::DType::F32);
  }
  auto mix = epwa::Model::load(gguf);
  const auto tokens = prompt(10);
  const auto want = all_logits(*bf16, tokens);
  const auto got = all_logits(*mix, tokens);
  // 4-bit experts and 8-bit activations elsewhere: close, not equal.
  const double err = max_rel(got.data(), want.data(), static_cast<int64_t>(want.size()));
  std::printf("bf16 -> mxfp4_moe: max rel %.3g\n", err);
  EXPECT_LE(err, 0.5);
  epwa::GenerateOptions go;
  go.max_new_tokens = 12;
  EXPECT_EQ(epwa::generate(*mix, tokens, go).size(), 12u);
  bf16.reset();  // they map the files: Windows cannot delete a mapped file
  mix.reset();
  fs::remove_all(dir);
  fs::remove(gguf);
}

}  // namespace
