// config.json of DeepSeek-V2-Lite and DeepSeek-V3 as published: multi-head latent attention, YaRN,
// the routers' fields, parameter counts and round trips.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "epwa/arch.hpp"
#include "epwa/config.hpp"
#include "epwa/make_model.hpp"
#include "st_test_util.hpp"

namespace epwa {
namespace {

using nlohmann::json;
using test::error_of;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// deepseek-ai/DeepSeek-V2-Lite and deepseek-ai/DeepSeek-V3 config.json as published (auto_map and
// V3's fp8 quantization_config left out).
constexpr const char* kDeepseekV2Lite =
    R"({"architectures": ["DeepseekV2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "bos_token_id": 100000, "eos_token_id": 100001, "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 10944, "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v2", "moe_intermediate_size": 1408, "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 64, "n_shared_experts": 2, "norm_topk_prob": false, "num_attention_heads": 16, "num_experts_per_tok": 6, "num_hidden_layers": 27, "num_key_value_heads": 16, "pretraining_tp": 1, "q_lora_rank": null, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "rms_norm_eps": 1e-06, "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096, "type": "yarn"}, "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax", "seq_aux": true, "tie_word_embeddings": false, "topk_group": 1, "topk_method": "greedy", "torch_dtype": "bfloat16", "transformers_version": "4.33.1", "use_cache": true, "v_head_dim": 128, "vocab_size": 102400})";
constexpr const char* kDeepseekV3 =
    R"({"architectures": ["DeepseekV3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3, "hidden_act": "silu", "hidden_size": 7168, "initializer_range": 0.02, "intermediate_size": 18432, "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v3", "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 128, "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128, "num_nextn_predict_layers": 1, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "rms_norm_eps": 1e-06, "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "type": "yarn"}, "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "seq_aux": true, "tie_word_embeddings": false, "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16", "transformers_version": "4.33.1", "use_cache": true, "v_head_dim": 128, "vocab_size": 129280})";

TEST(DeepseekV2Config, V2Lite) {
  const ModelConfig c = hf_config_from_json(json::parse(kDeepseekV2Lite));
  EXPECT_EQ(c.family, "deepseek2");
  EXPECT_TRUE(c.mla());
  EXPECT_EQ(c.q_lora_rank, 0);
  EXPECT_EQ(c.kv_lora_rank, 512);
  EXPECT_EQ(c.head_dim, 192);
  EXPECT_EQ(c.kv_cache_k_dim(), 576);  // the latent and the rope part, per token and layer
  EXPECT_EQ(c.kv_cache_v_dim(), 0);
  EXPECT_THAT(c.dense_layers, ElementsAre(0));
  EXPECT_EQ(c.shared_expert_intermediate_size, 2 * 1408);
  EXPECT_EQ(c.router_scoring, RouterScoring::Softmax);
  EXPECT_EQ(c.n_group, 1);
  EXPECT_EQ(c.router_rule(), "softmax,top6,raw");  // greedy, scale 1: the plain rule
  EXPECT_TRUE(c.plain_routing());
  EXPECT_EQ(c.yarn.factor, 40.0f);
  EXPECT_EQ(c.yarn.original_max_position, 4096);
  EXPECT_FLOAT_EQ(c.rope_attention_factor(), 1.0f);  // mscale == mscale_all_dim
  const double m = 0.1 * 0.707 * std::log(40.0) + 1;
  EXPECT_NEAR(c.attention_scale(), m * m / std::sqrt(192.0), 1e-7);
  EXPECT_EQ(c.parameter_count(), 15706484224);  // "15.7B"
}

TEST(DeepseekV2Config, V3) {
  const ModelConfig c = hf_config_from_json(json::parse(kDeepseekV3));
  EXPECT_EQ(c.family, "deepseek3");
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.num_layers, 61);  // the MTP layer (num_nextn_predict_layers) is not one of them
  EXPECT_THAT(c.dense_layers, ElementsAre(0, 1, 2));
  EXPECT_EQ(c.router_scoring, RouterScoring::Sigmoid);
  EXPECT_TRUE(c.router_bias);
  EXPECT_EQ(c.group_score, GroupScore::TopTwo);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.router_rule(), "sigmoid,top8,renorm,bias,group8/4top2,scale2.5");
  // 671B without the MTP module (the model card's 685B counts it).
  EXPECT_EQ(c.parameter_count(), 671026419200);
}

// The benchmark shape is 4 layers of the released V2-Lite; the tiny ones are valid models of
// each router.
TEST(DeepseekV2Config, Shapes) {
  json j = json::parse(kDeepseekV2Lite);
  j["num_hidden_layers"] = 4;
  EXPECT_EQ(hf_config_to_json(shape_config("deepseek-v2-lite-l4")),
            hf_config_to_json(hf_config_from_json(j)));
  // The side-by-side shape: the same with V2's query compression (the peers' rule, RESULTS.md).
  j["q_lora_rank"] = 1536;
  EXPECT_EQ(hf_config_to_json(shape_config("deepseek-v2-lite-qlora-l4")),
            hf_config_to_json(hf_config_from_json(j)));
  EXPECT_EQ(shape_config("tiny-deepseek2").router_rule(), "softmax,top3,raw,group4/2max,scale1.5");
  EXPECT_EQ(shape_config("tiny-deepseek3").router_rule(),
            "sigmoid,top3,renorm,bias,group4/2top2,scale2.5");
}

TEST(DeepseekV2Config, RoundTripsAndRefusals) {
  for (const char* text : {kDeepseekV2Lite, kDeepseekV3}) {
    json j = json::parse(text);
    j["num_hidden_layers"] = 4;
    const ModelConfig a = hf_config_from_json(j);
    const ModelConfig b = hf_config_from_json(hf_config_to_json(a));
    EXPECT_EQ(hf_config_to_json(b), hf_config_to_json(a));
    EXPECT_EQ(b.router_rule(), a.router_rule());
    EXPECT_EQ(b.rope_attention_factor(), a.rope_attention_factor());
    EXPECT_EQ(b.attention_scale(), a.attention_scale());
    EXPECT_EQ(b.parameter_count(), a.parameter_count());
  }
  json j = json::parse(kDeepseekV2Lite);
  j["topk_method"] = "noaux_tc";
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("unsupported topk_method"));
  j = json::parse(kDeepseekV3);
  j["scoring_func"] = "softmax";
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("unsupported scoring_func"));
  j = json::parse(kDeepseekV3);
  j["n_group"] = 7;  // 256 experts in 7 groups
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("n_group 7 does not divide"));
  j = json::parse(kDeepseekV3);
  j["rope_scaling"]["type"] = "longrope";
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("unsupported rope_scaling"));
  j = json::parse(kDeepseekV2Lite);
  j["attention_bias"] = true;
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("attention_bias"));
}

}  // namespace
}  // namespace epwa
