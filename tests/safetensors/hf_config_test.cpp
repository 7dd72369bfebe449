// HuggingFace config.json for MixtralForCausalLM: fields, defaults, errors, parameter count.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "epwa/config.hpp"
#include "st_test_util.hpp"

namespace epwa {
namespace {

using nlohmann::json;
using test::error_of;
using ::testing::AllOf;
using ::testing::HasSubstr;

// mistralai/Mixtral-8x7B-v0.1's config.json as published.
constexpr const char* kMixtral8x7B = R"({
  "architectures": ["MixtralForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mixtral",
  "num_attention_heads": 32,
  "num_experts_per_tok": 2,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "num_local_experts": 8,
  "output_router_logits": false,
  "rms_norm_eps": 1e-05,
  "rope_theta": 1000000.0,
  "router_aux_loss_coef": 0.02,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.36.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

json tiny() {
  return {{"architectures", {"MixtralForCausalLM"}},
          {"hidden_size", 64},
          {"intermediate_size", 96},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_local_experts", 4},
          {"num_experts_per_tok", 2},
          {"vocab_size", 100}};
}

std::string from_json_error(const json& j) {
  return error_of([&] { hf_config_from_json(j); });
}

TEST(HfConfig, Mixtral8x7BFromFile) {
  const auto dir = test::scratch_dir();
  test::write_text(dir / "config.json", kMixtral8x7B);
  const ModelConfig c = read_hf_config(dir / "config.json");
  EXPECT_EQ(c.architecture, "MixtralForCausalLM");
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.experts_per_token, 2);
  EXPECT_EQ(c.rope_theta, 1e6f);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.parameter_count(), 46'702'792'704);
}

TEST(HfConfig, ParameterCountTiedAndExplicitHeadDim) {
  json j = tiny();
  ModelConfig c = hf_config_from_json(j);
  const int64_t D = 64, V = 100, I = 96, E = 4, L = 2, hd = 16;
  const int64_t layer =
      D * 4 * hd * 2 + 2 * D * 4 * hd /*kv = heads*/ + 2 * D + E * D + E * 3 * D * I;
  EXPECT_EQ(c.parameter_count(), V * D + L * layer + D + V * D);
  j["tie_word_embeddings"] = true;
  EXPECT_EQ(hf_config_from_json(j).parameter_count(), V * D + L * layer + D);
  // head_dim independent of hidden_size / heads, and fewer kv heads.
  j["head_dim"] = 32;
  j["num_key_value_heads"] = 2;
  c = hf_config_from_json(j);
  EXPECT_EQ(c.head_dim, 32);
  const int64_t layer2 = 2 * D * 4 * 32 + 2 * D * 2 * 32 + 2 * D + E * D + E * 3 * D * I;
  EXPECT_EQ(c.parameter_count(), V * D + L * layer2 + D);
}

TEST(HfConfig, Defaults) {
  json j = tiny();
  j["head_dim"] = nullptr;
  const ModelConfig c = hf_config_from_json(j);
  EXPECT_EQ(c.num_kv_heads, 4);  // = heads
  EXPECT_EQ(c.head_dim, 16);     // hidden / heads
  EXPECT_EQ(c.rope_theta, 1e6f);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
}

TEST(HfConfig, EosListAndRopeParameters) {
  json j = tiny();
  j["eos_token_id"] = {7, 3};
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e5}};
  const ModelConfig c = hf_config_from_json(j);
  EXPECT_EQ(c.eos_token_id, 7);
  EXPECT_EQ(c.rope_theta, 5e5f);
  j["rope_parameters"]["rope_type"] = "longrope";
  EXPECT_THAT(from_json_error(j), HasSubstr("unsupported rope_parameters.rope_type \"longrope\""));
  j["rope_parameters"]["rope_type"] = "yarn";  // runs, with its factor
  EXPECT_THAT(from_json_error(j), HasSubstr("field 'rope_parameters.factor' is missing"));
}

TEST(HfConfig, ModelTypeOnlyIsAccepted) {
  json j = tiny();
  j.erase("architectures");
  j["model_type"] = "mixtral";
  EXPECT_EQ(hf_config_from_json(j).architecture, "MixtralForCausalLM");
}

TEST(HfConfig, MissingFieldsAndWrongTypes) {
  for (const char* f :
       {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_local_experts", "num_experts_per_tok", "vocab_size"}) {
    json j = tiny();
    j.erase(f);
    EXPECT_THAT(from_json_error(j), HasSubstr(std::string("field '") + f + "' is missing"));
    j[f] = "64";
    EXPECT_THAT(from_json_error(j), HasSubstr(std::string("field '") + f + "' must be an integer"));
    j[f] = 64.5;
    EXPECT_THAT(from_json_error(j), HasSubstr(std::string("field '") + f + "' must be an integer"));
  }
  json j = tiny();
  j["rms_norm_eps"] = "small";
  EXPECT_THAT(from_json_error(j), HasSubstr("field 'rms_norm_eps' must be a number"));
  j = tiny();
  j["tie_word_embeddings"] = 1;
  EXPECT_THAT(from_json_error(j), HasSubstr("field 'tie_word_embeddings' must be true or false"));
  j = tiny();
  j["eos_token_id"] = json::array();
  EXPECT_THAT(from_json_error(j), HasSubstr("field 'eos_token_id' is an empty list"));
  j = tiny();
  j["hidden_size"] = 1ll << 40;
  EXPECT_THAT(from_json_error(j), HasSubstr("field 'hidden_size' is out of range"));
  EXPECT_THAT(from_json_error(json::array()), HasSubstr("not a JSON object"));
}

TEST(HfConfig, ArchitectureAndUnsupportedFeatures) {
  json j = tiny();
  j["architectures"] = {"LlamaForCausalLM"};
  EXPECT_THAT(from_json_error(j), HasSubstr("unsupported architecture 'LlamaForCausalLM'"));
  j.erase("architectures");
  EXPECT_THAT(from_json_error(j), HasSubstr("field 'architectures' is missing"));
  j["model_type"] = "llama";
  EXPECT_THAT(from_json_error(j), HasSubstr("unsupported model_type 'llama'"));
  j = tiny();
  j["hidden_act"] = "gelu";
  EXPECT_THAT(from_json_error(j), HasSubstr("unsupported hidden_act \"gelu\""));
  j = tiny();
  j["sliding_window"] = 4096;
  EXPECT_THAT(from_json_error(j), HasSubstr("unsupported sliding_window 4096"));
  j["max_position_embeddings"] = 4096;
  EXPECT_EQ(from_json_error(j), "<no error>");  // the window covers every position
}

TEST(HfConfig, ValidateNamesTheField) {
  json j = tiny();
  j["num_key_value_heads"] = 3;
  EXPECT_THAT(from_json_error(j),
              HasSubstr("num_attention_heads 4 is not a multiple of num_key_value_heads 3"));
  j = tiny();
  j["num_experts_per_tok"] = 5;
  EXPECT_THAT(from_json_error(j),
              HasSubstr("num_experts_per_tok 5 exceeds the number of experts 4"));
  j = tiny();
  j["num_hidden_layers"] = 0;
  EXPECT_THAT(from_json_error(j), HasSubstr("num_hidden_layers must be positive"));
  j = tiny();
  j["rms_norm_eps"] = -1;
  EXPECT_THAT(from_json_error(j), HasSubstr("rms_norm_eps must be positive"));
  j = tiny();
  j["bos_token_id"] = 100;
  EXPECT_THAT(from_json_error(j), HasSubstr("bos_token_id 100 is outside the vocabulary"));
  ModelConfig c = hf_config_from_json(tiny());
  c.architecture = "Other";
  EXPECT_THAT(error_of([&] { c.validate(); }), HasSubstr("unsupported architecture 'Other'"));
}

TEST(HfConfig, FileErrorsNameTheFile) {
  const auto dir = test::scratch_dir();
  test::write_text(dir / "config.json", "{\"hidden_size\": ");
  EXPECT_THAT(error_of([&] { read_hf_config(dir / "config.json"); }),
              AllOf(HasSubstr("config.json"), HasSubstr("not valid JSON")));
  json j = tiny();
  j.erase("vocab_size");
  test::write_text(dir / "config.json", j.dump());
  EXPECT_THAT(
      error_of([&] { read_hf_config(dir / "config.json"); }),
      AllOf(HasSubstr((dir / "config.json").string()), HasSubstr("field 'vocab_size' is missing")));
  EXPECT_THAT(error_of([&] { read_hf_config(dir / "absent.json"); }), HasSubstr("absent.json"));
}

TEST(HfConfig, ToJsonRoundTrips) {
  const ModelConfig a = hf_config_from_json(json::parse(kMixtral8x7B));
  const json out = hf_config_to_json(a);
  EXPECT_EQ(out["model_type"], "mixtral");
  EXPECT_EQ(out["architectures"][0], "MixtralForCausalLM");
  EXPECT_EQ(out["rms_norm_eps"].get<double>(), 1e-5);  // shortest decimal, not 9.99999974e-06
  EXPECT_EQ(out["rope_theta"].get<double>(), 1e6);
  const ModelConfig b = hf_config_from_json(out);
  EXPECT_EQ(hf_config_to_json(b), out);
  EXPECT_EQ(b.parameter_count(), a.parameter_count());
  EXPECT_EQ(b.num_kv_heads, 8);
  EXPECT_EQ(b.head_dim, 128);
}

}  // namespace
}  // namespace epwa
