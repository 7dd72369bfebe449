// Qwen3-MoE (Qwen3MoeForCausalLM; GGUF "qwen3moe"): explicit head_dim, RMSNorm of each query and
// key head over head_dim, no biases, softmax router with norm_topk_prob, dense layers by
// decoder_sparse_step and mlp_only_layers.
#include <nlohmann/json.hpp>

#include "arch/families.hpp"
#include "arch/hf_fields.hpp"
#include "epwa/gguf.hpp"

namespace epwa {
namespace {

void read_hf(const HfFields& f, ModelConfig& c) {
  c.intermediate_size = f.integer("intermediate_size");
  c.num_experts = f.integer("num_experts");
  c.expert_intermediate_size = f.integer("moe_intermediate_size");
  c.norm_topk_prob = f.boolean("norm_topk_prob", true);
  c.attention_bias = f.boolean("attention_bias", false);
  c.qk_norm = QkNorm::PerHead;
  read_qwen_sparse_layers(f, c);
}

void write_hf(const ModelConfig& c, nlohmann::json& j) {
  j["intermediate_size"] = c.intermediate_size;
  j["num_experts"] = c.num_experts;
  j["moe_intermediate_size"] = c.expert_intermediate_size;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["attention_bias"] = c.attention_bias;
  j["use_sliding_window"] = false;
  j["router_aux_loss_coef"] = 0.001;
  write_qwen_sparse_layers(c, j);
}

void read_gguf(const GgufFile&, ModelConfig& c) {
  c.norm_topk_prob = true;  // llama.cpp's qwen3moe graph (expert_weights_norm overrides)
  c.qk_norm = QkNorm::PerHead;
}

void write_gguf(const ModelConfig& c, GgufWriter& w) {
  w.set_u32("qwen3moe.expert_feed_forward_length", c.expert_intermediate_size);
}

}  // namespace

const Architecture& arch_qwen3_moe() {
  static const Architecture a{"qwen3_moe", "Qwen3MoeForCausalLM",
                              "qwen3_moe", "qwen3moe",
                              false,       read_hf,
                              write_hf,    read_gguf,
                              write_gguf,  hf_standard_name};
  return a;
}

}  // namespace epwa
