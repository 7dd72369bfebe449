#include "hf_names.hpp"

namespace epwa {

std::vector<HfTensor> hf_tensor_list(const ModelConfig& c) {
  const int64_t d = c.hidden_size, hd = c.head_dim, in = c.intermediate_size;
  std::vector<HfTensor> t;
  t.push_back({"model.embed_tokens.weight", {c.vocab_size, d}});
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {d}});
    t.push_back({p + "self_attn.q_proj.weight", {c.num_heads * hd, d}});
    t.push_back({p + "self_attn.k_proj.weight", {c.num_kv_heads * hd, d}});
    t.push_back({p + "self_attn.v_proj.weight", {c.num_kv_heads * hd, d}});
    t.push_back({p + "self_attn.o_proj.weight", {d, c.num_heads * hd}});
    t.push_back({p + "post_attention_layernorm.weight", {d}});
    t.push_back({p + "block_sparse_moe.gate.weight", {c.num_experts, d}, true});
    for (int32_t e = 0; e < c.num_experts; ++e) {
      const std::string ep = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      t.push_back({ep + "w1.weight", {in, d}});
      t.push_back({ep + "w2.weight", {d, in}});
      t.push_back({ep + "w3.weight", {in, d}});
    }
  }
  t.push_back({"model.norm.weight", {d}});
  if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {c.vocab_size, d}});
  return t;
}

}  // namespace epwa
