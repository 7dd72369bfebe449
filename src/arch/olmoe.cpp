// OLMoE (OlmoeForCausalLM; GGUF "olmoe"): RMSNorm of the whole q and k projections before the split
// into heads, optional clip_qkv, softmax router without renormalisation (norm_topk_prob false by
// default), every layer sparse.
#include <nlohmann/json.hpp>

#include "arch/families.hpp"
#include "arch/hf_fields.hpp"
#include "epwa/gguf.hpp"

namespace epwa {
namespace {

void read_hf(const HfFields& f, ModelConfig& c) {
  c.intermediate_size = f.integer("intermediate_size");
  c.expert_intermediate_size = c.intermediate_size;
  c.num_experts = f.integer("num_experts");
  c.norm_topk_prob = f.boolean("norm_topk_prob", false);
  c.clip_qkv = f.number("clip_qkv", 0.0f);
  c.attention_bias = f.boolean("attention_bias", false);
  c.qk_norm = QkNorm::Full;
}

void write_hf(const ModelConfig& c, nlohmann::json& j) {
  j["intermediate_size"] = c.expert_intermediate_size;
  j["num_experts"] = c.num_experts;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["attention_bias"] = c.attention_bias;
  j["clip_qkv"] = c.clip_qkv > 0 ? nlohmann::json(shortest(c.clip_qkv)) : nlohmann::json(nullptr);
  j["router_aux_loss_coef"] = 0.01;
}

// The expert width is feed_forward_length (registry.cpp's fallback).
void read_gguf(const GgufFile&, ModelConfig& c) {
  c.norm_topk_prob = false;
  c.qk_norm = QkNorm::Full;
}

void write_gguf(const ModelConfig&, GgufWriter&) {}

}  // namespace

const Architecture& arch_olmoe() {
  static const Architecture a{"olmoe", "OlmoeForCausalLM", "olmoe",   "olmoe",    false,
                              read_hf, write_hf,           read_gguf, write_gguf, hf_standard_name};
  return a;
}

}  // namespace epwa
