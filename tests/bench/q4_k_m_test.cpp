// `q4_k_m`: llama.cpp's Q4_K_M mix, written per tensor with general.file_type 15.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "epwa/error.hpp"
#include "epwa/gguf.hpp"
#include "epwa/model.hpp"
#include "epwa/quant_preset.hpp"
#include "fixture.hpp"

using namespace epwa;

namespace {

std::map<std::string, DType> types_of(const GgufFile& f) {
  std::map<std::string, DType> out;
  for (const TensorView& t : f.tensors()) out[t.name] = t.dtype;
  return out;
}

std::string blk(int l, const char* what) {
  return "blk." + std::to_string(l) + "." + what + ".weight";
}

}  // namespace

TEST(Q4KM, MoreBitsLayersAsLlamaCpp) {
  // 4 layers: n/8 = 0 and 7n/8 = 3, so layers 2 ((2-0)%3 == 2) and 3.
  EXPECT_FALSE(more_bits_layer(0, 4));
  EXPECT_FALSE(more_bits_layer(1, 4));
  EXPECT_TRUE(more_bits_layer(2, 4));
  EXPECT_TRUE(more_bits_layer(3, 4));
  // 32 layers: 0-3, 28-31 and 6, 9, ..., 27.
  for (int l : {0, 3, 6, 9, 27, 28, 31}) EXPECT_TRUE(more_bits_layer(l, 32)) << l;
  for (int l : {4, 5, 7, 8, 26}) EXPECT_FALSE(more_bits_layer(l, 32)) << l;
}

TEST(Q4KM, EightExpertsFileHasMixtralTypes) {
  auto m = Model::load(bench_test::ksize_f16(8));
  const auto out = bench_test::temp_dir() / "k8-q4_k_m.gguf";
  const auto notes = save_model_gguf_preset(*m, "q4_k_m", {}, out);
  EXPECT_TRUE(notes.empty());
  GgufFile f(out);
  EXPECT_EQ(f.get_u32("general.file_type"), 15u);
  const auto t = types_of(f);
  EXPECT_EQ(t.at("token_embd.weight"), DType::Q4_K);
  EXPECT_EQ(t.at("output.weight"), DType::Q6_K);
  EXPECT_EQ(t.at("output_norm.weight"), DType::F32);
  for (int l = 0; l < 4; ++l) {
    const bool more = l >= 2;
    EXPECT_EQ(t.at(blk(l, "attn_q")), DType::Q4_K) << l;
    EXPECT_EQ(t.at(blk(l, "attn_k")), DType::Q8_0) << l;  // 8 experts: attn_k and attn_v Q8_0
    EXPECT_EQ(t.at(blk(l, "attn_v")), DType::Q8_0) << l;
    EXPECT_EQ(t.at(blk(l, "attn_output")), DType::Q5_K) << l;
    EXPECT_EQ(t.at(blk(l, "ffn_gate_exps")), DType::Q4_K) << l;
    EXPECT_EQ(t.at(blk(l, "ffn_up_exps")), DType::Q4_K) << l;
    EXPECT_EQ(t.at(blk(l, "ffn_down_exps")), more ? DType::Q6_K : DType::Q4_K) << l;
    EXPECT_EQ(t.at(blk(l, "ffn_gate_inp")), DType::F32) << l;
    EXPECT_EQ(t.at(blk(l, "attn_norm")), DType::F32) << l;
  }
  // The file loads and runs.
  auto q = Model::load(out);
  Context cache = q->make_context(4);
  const std::vector<int32_t> toks{1, 7, 42};
  const auto logits = q->forward(toks, cache);
  ASSERT_EQ(logits.size(), static_cast<size_t>(q->config().vocab_size));
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

TEST(Q4KM, OtherExpertCountsUseMoreBitsOnAttnV) {
  auto m = Model::load(bench_test::ksize_f16(4));
  const auto out = bench_test::temp_dir() / "k4-q4_k_m.gguf";
  save_model_gguf_preset(*m, "q4_k_m", {}, out);
  GgufFile f(out);
  EXPECT_EQ(f.get_u32("general.file_type"), 15u);
  const auto t = types_of(f);
  for (int l = 0; l < 4; ++l) {
    const DType more = l >= 2 ? DType::Q6_K : DType::Q4_K;
    EXPECT_EQ(t.at(blk(l, "attn_k")), DType::Q4_K) << l;
    EXPECT_EQ(t.at(blk(l, "attn_v")), more) << l;
    EXPECT_EQ(t.at(blk(l, "attn_output")), DType::Q4_K) << l;
    EXPECT_EQ(t.at(blk(l, "ffn_down_exps")), more) << l;
  }
  EXPECT_EQ(t.at("output.weight"), DType::Q6_K);
}

TEST(Q4KM, RowsThatDoNotFitFallBack) {
  // The tiny shape (hidden 64): Q4_K -> Q5_0, Q6_K -> Q8_0, one note each.
  auto m = Model::load(bench_test::tiny_f16());
  const auto out = bench_test::temp_dir() / "tiny-q4_k_m.gguf";
  const auto notes = save_model_gguf_preset(*m, "q4_k_m", {}, out);
  EXPECT_FALSE(notes.empty());
  const auto t = types_of(GgufFile(out));
  EXPECT_EQ(t.at("blk.0.attn_q.weight"), DType::Q5_0);
  EXPECT_EQ(t.at("output.weight"), DType::Q8_0);
}

TEST(Q4KM, UnknownPresetThrows) {
  auto m = Model::load(bench_test::tiny_f16());
  EXPECT_THROW(save_model_gguf_preset(*m, "q3_k_m", {}, bench_test::temp_dir() / "x.gguf"), Error);
  EXPECT_TRUE(is_quant_preset("q4_k_m"));
  EXPECT_FALSE(is_quant_preset("q4_k"));
}
