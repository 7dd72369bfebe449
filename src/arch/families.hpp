// The families of the registry, one file each (src/arch/<id>.cpp).
#pragma once
#include "epwa/arch.hpp"

namespace epwa {

const Architecture& arch_mixtral();
const Architecture& arch_qwen2_moe();
const Architecture& arch_olmoe();
const Architecture& arch_qwen3_moe();
const Architecture& arch_deepseek();
const Architecture& arch_deepseek_v2();
const Architecture& arch_deepseek_v3();
const Architecture& arch_gpt_oss();

// DeepSeek's HF tensor names (V1, V2, V3): the shared experts are one module, mlp.shared_experts.
std::string deepseek_hf_name(TensorKind kind, int32_t layer, int32_t expert);

// Qwen-MoE's rule for sparse layers (decoder_sparse_step, mlp_only_layers), as dense_layers.
void read_qwen_sparse_layers(const HfFields& f, ModelConfig& c);
void write_qwen_sparse_layers(const ModelConfig& c, nlohmann::json& j);

}  // namespace epwa
