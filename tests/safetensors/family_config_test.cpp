// config.json of the Qwen2-MoE, OLMoE, Qwen3-MoE and DeepSeek-MoE (V1) families: the released
// configs as published, their per-layer rules and parameter counts (the totals the model cards
// state), and round trips.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

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

// Qwen/Qwen1.5-MoE-A2.7B, allenai/OLMoE-1B-7B-0924 and Qwen/Qwen3-30B-A3B config.json as published.
constexpr const char* kQwen15MoE =
    R"({"architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 8192, "max_window_layers": 21, "model_type": "qwen2_moe", "num_attention_heads": 16, "num_hidden_layers": 24, "num_key_value_heads": 16, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.36.0.dev0", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936, "decoder_sparse_step": 1, "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_experts_per_tok": 4, "num_experts": 60, "norm_topk_prob": false, "output_router_logits": false, "router_aux_loss_coef": 0.001})";
constexpr const char* kOlmoe =
    R"({"architectures": ["OlmoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "clip_qkv": null, "eos_token_id": 50279, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 1024, "max_position_embeddings": 4096, "model_type": "olmoe", "norm_topk_prob": false, "num_attention_heads": 16, "num_experts": 64, "num_experts_per_tok": 8, "num_hidden_layers": 16, "num_key_value_heads": 16, "output_router_logits": false, "pad_token_id": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0, "router_aux_loss_coef": 0.01, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 50304})";
constexpr const char* kQwen3MoE =
    R"({"architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144, "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe", "moe_intermediate_size": 768, "norm_topk_prob": true, "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": false, "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})";

// deepseek-ai/deepseek-moe-16b-base config.json as published (auto_map left out).
constexpr const char* kDeepseekMoE16B =
    R"({"architectures": ["DeepseekForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "bos_token_id": 100000, "eos_token_id": 100001, "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 10944, "max_position_embeddings": 4096, "model_type": "deepseek", "moe_intermediate_size": 1408, "moe_layer_freq": 1, "n_routed_experts": 64, "n_shared_experts": 2, "norm_topk_prob": false, "num_attention_heads": 16, "num_experts_per_tok": 6, "num_hidden_layers": 28, "num_key_value_heads": 16, "pretraining_tp": 1, "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 10000, "scoring_func": "softmax", "seq_aux": true, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.36.0", "use_cache": true, "vocab_size": 102400})";

TEST(FamilyConfig, Qwen15MoEA27B) {
  const ModelConfig c = hf_config_from_json(json::parse(kQwen15MoE));
  EXPECT_EQ(c.family, "qwen2_moe");
  EXPECT_EQ(c.num_experts, 60);
  EXPECT_EQ(c.experts_per_token, 4);
  EXPECT_EQ(c.expert_intermediate_size, 1408);
  EXPECT_EQ(c.shared_expert_intermediate_size, 5632);
  EXPECT_TRUE(c.shared_expert_gate);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.qk_norm, QkNorm::None);
  EXPECT_EQ(c.num_moe_layers(), 24);
  EXPECT_EQ(c.parameter_count(), 14315784192);  // "14.3B params"
}

TEST(FamilyConfig, Olmoe1B7B) {
  const ModelConfig c = hf_config_from_json(json::parse(kOlmoe));
  EXPECT_EQ(c.family, "olmoe");
  EXPECT_EQ(c.num_experts, 64);
  EXPECT_EQ(c.experts_per_token, 8);
  EXPECT_EQ(c.expert_intermediate_size, 1024);
  EXPECT_EQ(c.qk_norm, QkNorm::Full);
  EXPECT_EQ(c.clip_qkv, 0.0f);  // null
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.bos_token_id, 1);                // absent: the default
  EXPECT_EQ(c.parameter_count(), 6919161856);  // "6.92B params"
}

TEST(FamilyConfig, Qwen3MoE30BA3B) {
  const ModelConfig c = hf_config_from_json(json::parse(kQwen3MoE));
  EXPECT_EQ(c.family, "qwen3_moe");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.num_experts, 128);
  EXPECT_EQ(c.expert_intermediate_size, 768);
  EXPECT_EQ(c.qk_norm, QkNorm::PerHead);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.eos_token_id, 151645);
  EXPECT_EQ(c.parameter_count(), 30532122624);  // "30.5B"
}

TEST(FamilyConfig, DeepseekMoE16B) {
  const ModelConfig c = hf_config_from_json(json::parse(kDeepseekMoE16B));
  EXPECT_EQ(c.family, "deepseek");
  EXPECT_EQ(c.num_experts, 64);
  EXPECT_EQ(c.experts_per_token, 6);
  EXPECT_EQ(c.expert_intermediate_size, 1408);
  EXPECT_EQ(c.shared_expert_intermediate_size, 2 * 1408);  // two shared experts, one FFN
  EXPECT_FALSE(c.shared_expert_gate);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.qk_norm, QkNorm::None);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.bos_token_id, 100000);
  EXPECT_THAT(c.dense_layers, ElementsAre(0));
  EXPECT_EQ(c.layer(0).dense_ffn, 10944);
  EXPECT_EQ(c.num_moe_layers(), 27);
  EXPECT_EQ(c.router_rule(), "softmax,top6,raw");
  EXPECT_EQ(c.parameter_count(), 16375728128);  // "16.4B"
}

// The benchmark shape is 4 layers of the released model; the tiny one has its dense first layer and
// shared experts.
TEST(FamilyConfig, DeepseekShapes) {
  json j = json::parse(kDeepseekMoE16B);
  j["num_hidden_layers"] = 4;
  const ModelConfig released = hf_config_from_json(j);
  const ModelConfig bench = shape_config("deepseek-moe-16b-l4");
  EXPECT_EQ(hf_config_to_json(bench), hf_config_to_json(released));
  const ModelConfig tiny = shape_config("tiny-deepseek");
  EXPECT_EQ(tiny.family, "deepseek");
  EXPECT_THAT(tiny.dense_layers, ElementsAre(0));
  EXPECT_EQ(tiny.shared_expert_intermediate_size, 2 * tiny.expert_intermediate_size);
}

// DeepseekDecoderLayer: MoE iff layer >= first_k_dense_replace and layer % moe_layer_freq == 0;
// MoEGate renormalises only for top_k > 1; bad values name their field.
TEST(FamilyConfig, DeepseekLayerAndRouterRules) {
  json j = json::parse(kDeepseekMoE16B);
  j["num_hidden_layers"] = 7;
  j["first_k_dense_replace"] = 3;
  j["moe_layer_freq"] = 2;
  ModelConfig c = hf_config_from_json(j);
  EXPECT_THAT(c.moe_layers(), ElementsAre(4, 6));
  const json out = hf_config_to_json(c);
  EXPECT_EQ(out["first_k_dense_replace"], 4);  // the first MoE layer: the same layers
  EXPECT_EQ(out["moe_layer_freq"], 2);
  EXPECT_EQ(hf_config_from_json(out).dense_layers, c.dense_layers);
  j["norm_topk_prob"] = true;
  EXPECT_TRUE(hf_config_from_json(j).norm_topk_prob);
  j["num_experts_per_tok"] = 1;
  EXPECT_FALSE(hf_config_from_json(j).norm_topk_prob);
  j = json::parse(kDeepseekMoE16B);
  j["n_shared_experts"] = nullptr;
  EXPECT_EQ(hf_config_from_json(j).shared_expert_intermediate_size, 0);
  j["moe_layer_freq"] = 0;
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }),
              HasSubstr("moe_layer_freq must be positive, got 0"));
  j = json::parse(kDeepseekMoE16B);
  j["scoring_func"] = "sigmoid";
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("unsupported scoring_func"));
  j = json::parse(kDeepseekMoE16B);
  j["n_routed_experts"] = nullptr;  // a dense DeepSeek model
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("'n_routed_experts'"));
  j = json::parse(kDeepseekMoE16B);
  j["n_shared_experts"] = -1;
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }),
              HasSubstr("n_shared_experts must not be negative"));
  j = json::parse(kDeepseekMoE16B);
  j["first_k_dense_replace"] = 28;
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("no MoE layer"));
  j = json::parse(kDeepseekMoE16B);
  j["head_dim"] = 64;
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("must equal hidden_size"));
  c = hf_config_from_json(json::parse(kDeepseekMoE16B));
  c.dense_layers = {0, 2};  // not first_k_dense_replace's and moe_layer_freq's pattern
  EXPECT_THAT(error_of([&] { hf_config_to_json(c); }), HasSubstr("not DeepSeek's pattern"));
}

TEST(FamilyConfig, SparseLayerRule) {
  json j = json::parse(kQwen3MoE);
  j["num_hidden_layers"] = 6;
  j["decoder_sparse_step"] = 2;  // layers 1, 3, 5 sparse
  j["mlp_only_layers"] = {3};
  const ModelConfig c = hf_config_from_json(j);
  EXPECT_THAT(c.dense_layers, ElementsAre(0, 2, 3, 4));
  EXPECT_THAT(c.moe_layers(), ElementsAre(1, 5));
  EXPECT_FALSE(c.layer(0).moe);
  EXPECT_EQ(c.layer(0).dense_ffn, 6144);
  EXPECT_EQ(c.layer(5).expert_ffn, 768);
  j["mlp_only_layers"] = {1, 3, 5};
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }), HasSubstr("no MoE layer"));
  j["decoder_sparse_step"] = 0;
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }),
              HasSubstr("decoder_sparse_step must be positive"));
}

TEST(FamilyConfig, SlidingWindowOnlyWhenUsed) {
  json j = json::parse(kQwen15MoE);  // sliding_window 32768 with use_sliding_window false
  EXPECT_NO_THROW(hf_config_from_json(j));
  j["use_sliding_window"] = true;
  j["sliding_window"] = 4096;
  EXPECT_THAT(error_of([&] { hf_config_from_json(j); }),
              HasSubstr("unsupported sliding_window 4096"));
}

TEST(FamilyConfig, ToJsonRoundTrips) {
  for (const char* text : {kQwen15MoE, kOlmoe, kQwen3MoE, kDeepseekMoE16B}) {
    json j = json::parse(text);
    if (j["model_type"] == "olmoe") j["clip_qkv"] = 8.0;
    if (j["model_type"] == "qwen3_moe") j["mlp_only_layers"] = {0, 7};
    const ModelConfig a = hf_config_from_json(j);
    const json out = hf_config_to_json(a);
    const ModelConfig b = hf_config_from_json(out);
    EXPECT_EQ(hf_config_to_json(b), out);
    EXPECT_EQ(b.parameter_count(), a.parameter_count());
    EXPECT_EQ(b.dense_layers, a.dense_layers);
    EXPECT_EQ(b.clip_qkv, a.clip_qkv);
    EXPECT_EQ(b.norm_topk_prob, a.norm_topk_prob);
    EXPECT_EQ(b.shared_expert_intermediate_size, a.shared_expert_intermediate_size);
  }
}

TEST(FamilyConfig, RegistryLookups) {
  EXPECT_EQ(find_hf_architecture("OlmoeForCausalLM"), &architecture("olmoe"));
  EXPECT_EQ(find_hf_architecture("qwen3_moe"), &architecture("qwen3_moe"));
  EXPECT_EQ(find_gguf_architecture("qwen2moe"), &architecture("qwen2_moe"));
  EXPECT_EQ(find_gguf_architecture("llama"), &architecture("mixtral"));
  EXPECT_EQ(find_hf_architecture("DeepseekForCausalLM"), &architecture("deepseek"));
  EXPECT_EQ(find_gguf_architecture("deepseek"), &architecture("deepseek"));
  EXPECT_EQ(find_hf_architecture("LlamaForCausalLM"), nullptr);
  EXPECT_THAT(error_of([] { architecture("gpt2"); }), HasSubstr("unknown model family 'gpt2'"));
  json j = json::parse(kOlmoe);
  j["architectures"] = {"JambaForCausalLM"};
  EXPECT_THAT(
      error_of([&] { hf_config_from_json(j); }),
      HasSubstr("unsupported architecture 'JambaForCausalLM' (epwa runs MixtralForCausalLM, "
                "Qwen2MoeForCausalLM, OlmoeForCausalLM, Qwen3MoeForCausalLM, "
                "DeepseekForCausalLM, DeepseekV2ForCausalLM, DeepseekV3ForCausalLM, "
                "GptOssForCausalLM)"));
}

// Every tensor of the schema has distinct HF and GGUF names, and a tied head is optional.
TEST(FamilyConfig, TensorSchemaNames) {
  for (const char* text : {kQwen15MoE, kOlmoe, kQwen3MoE, kDeepseekMoE16B}) {
    json j = json::parse(text);
    j["num_hidden_layers"] = 2;
    j["tie_word_embeddings"] = true;
    const ModelConfig c = hf_config_from_json(j);
    std::set<std::string> hf, gguf;
    int optional = 0;
    for_each_tensor(c, [&](const TensorSpec& s) {
      EXPECT_TRUE(hf.insert(s.hf).second) << s.hf;
      if (s.expert <= 0) {
        EXPECT_TRUE(gguf.insert(s.gguf).second) << s.gguf;
      }
      EXPECT_LE(s.gguf.size(), 63u);
      optional += !s.required;
    });
    EXPECT_EQ(optional, 1);
    EXPECT_TRUE(hf.count("model.layers.1.mlp.experts.0.gate_proj.weight"));
    EXPECT_TRUE(gguf.count("blk.1.ffn_gate_exps.weight"));
    if (j["model_type"] == "deepseek") {  // layer 0 dense; one ungated shared FFN
      EXPECT_TRUE(hf.count("model.layers.0.mlp.gate_proj.weight"));
      EXPECT_TRUE(hf.count("model.layers.1.mlp.shared_experts.down_proj.weight"));
      EXPECT_TRUE(gguf.count("blk.1.ffn_down_shexp.weight"));
      EXPECT_FALSE(gguf.count("blk.1.ffn_gate_inp_shexp.weight"));
    }
  }
}

}  // namespace
}  // namespace epwa
