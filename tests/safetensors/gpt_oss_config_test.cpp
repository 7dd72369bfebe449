// config.json of GPT-OSS: the released gpt-oss-20b fields read into the engine's plain fields
// (windows per layer, YaRN, the top-k softmax router, biased experts, the clamped SwiGLU), the
// parameter count of the model card, a round trip, and clear errors for what epwa does not run.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "epwa/config.hpp"
#include "st_test_util.hpp"

namespace epwa {
namespace {

using nlohmann::json;
using test::error_of;
using ::testing::HasSubstr;

// openai/gpt-oss-20b config.json without its quantization_config (the MXFP4 experts).
constexpr const char* kGptOss20B =
    R"({"architectures": ["GptOssForCausalLM"], "attention_bias": true, "attention_dropout": 0.0, "eos_token_id": 200002, "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880, "initial_context_length": 4096, "initializer_range": 0.02, "intermediate_size": 2880, "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention"], "max_position_embeddings": 131072, "model_type": "gpt_oss", "num_attention_heads": 64, "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 8, "num_local_experts": 32, "output_router_logits": false, "pad_token_id": 199999, "rms_norm_eps": 1e-05, "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": false}, "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0, "tie_word_embeddings": false, "transformers_version": "4.55.0.dev0", "use_cache": true, "vocab_size": 201088})";

TEST(GptOssConfig, Released20B) {
  const ModelConfig c = hf_config_from_json(json::parse(kGptOss20B));
  EXPECT_EQ(c.family, "gpt_oss");
  EXPECT_EQ(c.num_experts, 32);
  EXPECT_EQ(c.experts_per_token, 4);
  EXPECT_EQ(c.expert_intermediate_size, 2880);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.attention_out_bias);
  EXPECT_TRUE(c.attention_sinks);
  EXPECT_TRUE(c.router_bias);
  EXPECT_TRUE(c.expert_bias);
  EXPECT_EQ(c.router_scoring, RouterScoring::TopkSoftmax);
  EXPECT_EQ(c.swiglu_limit, 7.0f);
  EXPECT_EQ(c.rope_theta, 150000.0f);
  EXPECT_EQ(c.yarn.factor, 32.0f);
  EXPECT_EQ(c.yarn.original_max_position, 4096);
  EXPECT_FALSE(c.yarn.truncate);
  EXPECT_FLOAT_EQ(c.rope_attention_factor(), static_cast<float>(0.1 * std::log(32.0) + 1));
  EXPECT_EQ(c.sliding_window, 128);
  EXPECT_EQ(c.sliding_layers.size(), 12u);
  EXPECT_EQ(c.layer_window(0), 128);
  EXPECT_EQ(c.layer_window(1), 0);
  EXPECT_EQ(c.layer_window(22), 128);
  EXPECT_EQ(c.num_moe_layers(), 24);
  EXPECT_EQ(c.eos_token_id, 200002);
  EXPECT_EQ(c.router_rule(), "bias,top4,softmax");
  EXPECT_EQ(c.parameter_count(), 20914757184);  // "21B parameters"
}

TEST(GptOssConfig, RoundTrips) {
  const ModelConfig c = hf_config_from_json(json::parse(kGptOss20B));
  const ModelConfig back = hf_config_from_json(hf_config_to_json(c));
  EXPECT_EQ(back.sliding_layers, c.sliding_layers);
  EXPECT_EQ(back.sliding_window, c.sliding_window);
  EXPECT_EQ(back.yarn.factor, c.yarn.factor);
  EXPECT_EQ(back.rope_attention_factor(), c.rope_attention_factor());
  EXPECT_EQ(back.yarn.truncate, c.yarn.truncate);
  EXPECT_EQ(back.rope_theta, c.rope_theta);
  EXPECT_EQ(back.parameter_count(), c.parameter_count());
}

TEST(GptOssConfig, DefaultsAlternateWindows) {
  json j = json::parse(kGptOss20B);
  j.erase("layer_types");
  j.erase("sliding_window");
  j.erase("swiglu_limit");
  const ModelConfig c = hf_config_from_json(j);
  EXPECT_EQ(c.sliding_window, 128);  // GptOssConfig's defaults
  EXPECT_EQ(c.layer_window(0), 128);
  EXPECT_EQ(c.layer_window(1), 0);
  EXPECT_EQ(c.swiglu_limit, 7.0f);
}

TEST(GptOssConfig, RefusesWhatItDoesNotRun) {
  json j = json::parse(kGptOss20B);
  j["layer_types"][3] = "chunked_attention";
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("unsupported layer type"));
  j = json::parse(kGptOss20B);
  j["layer_types"].erase(0);
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("layer_types"));
  j = json::parse(kGptOss20B);
  j["rope_scaling"]["rope_type"] = "longrope";
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("default RoPE or YaRN"));
}

}  // namespace
}  // namespace epwa
