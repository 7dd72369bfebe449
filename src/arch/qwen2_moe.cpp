// Qwen2-MoE / Qwen1.5-MoE (Qwen2MoeForCausalLM; GGUF "qwen2moe"): q/k/v biases, softmax router
// (top-k weights renormalised only with norm_topk_prob), and a shared expert scaled by
// sigmoid(shared_expert_gate . x) added to the routed experts; dense layers by decoder_sparse_step
// and mlp_only_layers.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "arch/families.hpp"
#include "arch/hf_fields.hpp"
#include "epwa/error.hpp"
#include "epwa/gguf.hpp"

namespace epwa {

// transformers: layer l is sparse iff l is not in mlp_only_layers, num_experts > 0 and
// (l + 1) % decoder_sparse_step == 0.
void read_qwen_sparse_layers(const HfFields& f, ModelConfig& c) {
  const int32_t step = f.integer("decoder_sparse_step", 1);
  check(step > 0, "config: decoder_sparse_step must be positive, got " + std::to_string(step));
  const std::vector<int32_t> mlp_only = f.integers("mlp_only_layers");
  c.dense_layers.clear();
  for (int32_t l = 0; l < c.num_layers; ++l)
    if (std::find(mlp_only.begin(), mlp_only.end(), l) != mlp_only.end() || (l + 1) % step != 0)
      c.dense_layers.push_back(l);
}

void write_qwen_sparse_layers(const ModelConfig& c, nlohmann::json& j) {
  j["decoder_sparse_step"] = 1;
  j["mlp_only_layers"] = c.dense_layers;
}

namespace {

void read_hf(const HfFields& f, ModelConfig& c) {
  c.intermediate_size = f.integer("intermediate_size");
  c.num_experts = f.integer("num_experts");
  c.expert_intermediate_size = f.integer("moe_intermediate_size");
  c.shared_expert_intermediate_size = f.integer("shared_expert_intermediate_size", 0);
  c.shared_expert_gate = c.shared_expert_intermediate_size > 0;
  c.norm_topk_prob = f.boolean("norm_topk_prob", false);
  c.attention_bias = f.boolean("qkv_bias", true);
  read_qwen_sparse_layers(f, c);
}

void write_hf(const ModelConfig& c, nlohmann::json& j) {
  j["intermediate_size"] = c.intermediate_size;
  j["num_experts"] = c.num_experts;
  j["moe_intermediate_size"] = c.expert_intermediate_size;
  j["shared_expert_intermediate_size"] = c.shared_expert_intermediate_size;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["qkv_bias"] = c.attention_bias;
  j["use_sliding_window"] = false;
  j["router_aux_loss_coef"] = 0.001;
  write_qwen_sparse_layers(c, j);
}

void read_gguf(const GgufFile& f, ModelConfig& c) {
  c.shared_expert_intermediate_size =
      static_cast<int32_t>(f.find_u32("qwen2moe.expert_shared_feed_forward_length").value_or(0));
  c.shared_expert_gate = c.shared_expert_intermediate_size > 0;
  c.norm_topk_prob = false;  // llama.cpp's qwen2moe graph (expert_weights_norm overrides)
}

void write_gguf(const ModelConfig& c, GgufWriter& w) {
  w.set_u32("qwen2moe.expert_feed_forward_length", c.expert_intermediate_size);
  w.set_u32("qwen2moe.expert_shared_feed_forward_length", c.shared_expert_intermediate_size);
}

}  // namespace

const Architecture& arch_qwen2_moe() {
  static const Architecture a{"qwen2_moe", "Qwen2MoeForCausalLM",
                              "qwen2_moe", "qwen2moe",
                              false,       read_hf,
                              write_hf,    read_gguf,
                              write_gguf,  hf_standard_name};
  return a;
}

}  // namespace epwa
