// The hyper-parameters of a Mixtral-style MoE transformer, whatever file they came from.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace epwa {

struct ModelConfig {
  std::string architecture = "MixtralForCausalLM";
  int32_t vocab_size = 0;
  int32_t hidden_size = 0;
  int32_t intermediate_size = 0;  // width of one expert's FFN
  int32_t num_layers = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;  // hidden_size / num_heads unless the config says otherwise
  int32_t num_experts = 0;
  int32_t experts_per_token = 0;
  float rope_theta = 1e6f;
  float rms_norm_eps = 1e-5f;
  int32_t max_position_embeddings = 32768;
  bool tie_word_embeddings = false;
  int32_t bos_token_id = 1;
  int32_t eos_token_id = 2;

  // Throws Error naming the first field that is missing, non-positive or inconsistent.
  void validate() const;
  int64_t parameter_count() const;
};

// Reads a HuggingFace config.json (MixtralForCausalLM); throws Error naming the file and field.
ModelConfig read_hf_config(const std::filesystem::path& config_json);
ModelConfig hf_config_from_json(const nlohmann::json& j);
nlohmann::json hf_config_to_json(const ModelConfig& c);

}  // namespace epwa
