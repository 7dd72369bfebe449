// The hyper-parameters of an MoE transformer, whatever family and file they came from. The family's
// own rules (which layers are sparse, q/k norms, biases, shared experts) are read by its file in
// src/arch/ and stated here as plain fields, so that the engine knows no family by name.
#pragma once
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace epwa {

// RMSNorm of the query and key projections before RoPE.
enum class QkNorm : uint8_t {
  None,
  Full,     // over the whole projection, before the split into heads (OLMoE)
  PerHead,  // over each head's head_dim values (Qwen3-MoE)
};

// How the router turns its logits into the chosen experts and their weights.
enum class RouterScoring : uint8_t {
  Softmax,      // softmax over all experts, top-k (ties to the lower index), renormalised if
                // norm_topk_prob
  TopkSoftmax,  // top-k of the logits (ties to the lower index), softmax over the k (GPT-OSS)
  Sigmoid,      // DeepSeek-V3: sigmoid of each logit; chosen by sigmoid + correction bias, weighted
                // by the sigmoid alone (renormalised if norm_topk_prob)
};

// How the experts are limited to the best groups before the top-k (DeepSeek-V2/V3); n_group 1:
// no limit.
enum class GroupScore : uint8_t {
  Max,     // a group's score is its best expert's (V2 group_limited_greedy)
  TopTwo,  // the sum of its two best (V3 noaux_tc, on the biased scores)
};

// YaRN's magnitude correction, DeepSeek's yarn_get_mscale: 0.1 m ln(factor) + 1 (1 for factor <=
// 1).
inline double yarn_mscale(double factor, double m) {
  return factor <= 1 ? 1.0 : 0.1 * m * std::log(factor) + 1.0;
}

// YaRN rope scaling (rope_scaling type "yarn") for every family, as transformers'
// _compute_yarn_parameters reads it, and DeepSeek's attention scale. factor 1: off.
struct Yarn {
  float factor = 1;
  int32_t original_max_position = 0;
  float beta_fast = 32, beta_slow = 1;
  bool truncate = true;                  // floor/ceil the correction range (GPT-OSS: false)
  float mscale = 0, mscale_all_dim = 0;  // 0: unset
  float attention_factor = 0;            // cos/sin factor; 0: from mscale / mscale_all_dim
  bool on() const { return factor != 1; }
  // The factor on cos and sin (transformers' attention_factor), 1 when off.
  float cos_sin_factor() const {
    if (!on()) return 1;
    if (attention_factor > 0) return attention_factor;
    if (mscale != 0 && mscale_all_dim != 0)
      return static_cast<float>(yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim));
    return static_cast<float>(yarn_mscale(factor, 1));
  }
};

// What one transformer layer holds, derived from ModelConfig.
struct LayerConfig {
  bool moe = true;
  int32_t experts = 0, experts_used = 0, expert_ffn = 0;  // routed experts (MoE layer)
  int32_t shared_ffn = 0;                                 // width of the shared expert (0: none)
  bool shared_gate = false;  // the shared expert is scaled by sigmoid(w . x)
  int32_t dense_ffn = 0;     // width of the dense FFN (dense layer)
  int32_t window = 0;        // > 0: attention sees only the last `window` positions (sliding)
};

struct ModelConfig {
  std::string architecture = "MixtralForCausalLM";  // the HF class name
  std::string family = "mixtral";                   // the id of its file in src/arch/
  int32_t vocab_size = 0;
  int32_t hidden_size = 0;
  int32_t intermediate_size =
      0;  // dense FFN width (Mixtral: the expert width; it has no dense layer)
  int32_t num_layers = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;  // hidden_size / num_heads unless the config says otherwise
  float rope_theta = 1e6f;
  float rms_norm_eps = 1e-5f;
  int32_t max_position_embeddings = 32768;
  bool tie_word_embeddings = false;
  int32_t bos_token_id = 1;
  int32_t eos_token_id = 2;

  // Attention.
  bool attention_bias = false;  // q/k/v projections have biases
  QkNorm qk_norm = QkNorm::None;
  float clip_qkv = 0;                   // > 0: q, k, v clamped to [-clip_qkv, clip_qkv]
  bool attention_out_bias = false;      // the o projection has a bias
  bool attention_sinks = false;         // a learned logit per head joins each softmax's denominator
  int32_t sliding_window = 0;           // the window of the layers in sliding_layers
  std::vector<int32_t> sliding_layers;  // sorted
  // Multi-head latent attention (DeepSeek-V2/V3), on when kv_lora_rank > 0: head_dim is then
  // qk_nope_head_dim + qk_rope_head_dim and num_kv_heads num_heads; the KV cache holds the normed
  // latent and the roped key part (kv_lora_rank + qk_rope_head_dim values per token and layer).
  int32_t q_lora_rank = 0;  // 0: q from one projection of the hidden state
  int32_t kv_lora_rank = 0;
  int32_t qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;
  Yarn yarn;

  // Experts.
  int32_t num_experts = 0;
  int32_t experts_per_token = 0;
  int32_t expert_intermediate_size = 0;         // width of one routed expert's FFN
  int32_t shared_expert_intermediate_size = 0;  // 0: no shared expert
  bool shared_expert_gate = false;
  RouterScoring router_scoring = RouterScoring::Softmax;
  bool norm_topk_prob = true;
  // The router has a bias per expert: with TopkSoftmax a linear layer's bias on the logits
  // (GPT-OSS), otherwise DeepSeek-V3's e_score_correction_bias, added to the scores for the choice
  // only.
  bool router_bias = false;
  bool expert_bias = false;  // each expert's gate, up and down projections have biases
  // > 0: GPT-OSS's SwiGLU: gate clamped above at the limit, up to +-limit,
  // (up + 1) * gate * sigmoid(1.702 gate); 0: silu(gate) * up.
  float swiglu_limit = 0;
  int32_t n_group = 1, topk_group = 1;  // experts limited to the topk_group best of n_group groups
  GroupScore group_score = GroupScore::Max;
  float routed_scaling_factor = 1;  // multiplies the routed weights
  std::vector<int32_t>
      dense_layers;  // transformer layers with a dense FFN instead of experts, sorted

  bool is_moe_layer(int32_t layer) const;
  std::vector<int32_t> moe_layers() const;  // transformer-layer index of each MoE layer, in order
  int32_t num_moe_layers() const;
  LayerConfig layer(int32_t layer) const;
  // How many of the largest router logits the router confidence's softmax covers (docs/SPEC.md
  // section 3): 0 (all E), or k for the top-k softmax.
  int32_t confidence_experts() const {
    return router_scoring == RouterScoring::TopkSoftmax ? experts_per_token : 0;
  }
  // Attention window of a layer (0: every position).
  int32_t layer_window(int32_t layer) const;
  bool mla() const { return kv_lora_rank > 0; }
  // YaRN's factor on cos and sin (transformers' attention_factor), 1 without YaRN.
  float rope_attention_factor() const { return yarn.cos_sin_factor(); }
  // The softmax scale of attention: 1 / sqrt(head_dim), times mscale(factor, mscale_all_dim)^2
  // with YaRN when mscale_all_dim is set (DeepSeek's attention).
  float attention_scale() const;
  // Floats per token and layer in the KV cache: keys (or MLA's latent + rope part) and values
  // (0 for MLA: its values are read from the latent).
  int64_t kv_cache_k_dim() const;
  int64_t kv_cache_v_dim() const;
  // Whether routing is Mixtral's plain rule (softmax, top-k, optional renormalisation, no groups,
  // no scale, no bias) or GPT-OSS's top-k softmax: Backend::route; else Backend::route_grouped.
  bool plain_routing() const;
  // The routing rule as IRSH-v2 hashes it: "softmax,top<k>,renorm" or "softmax,top<k>,raw";
  // GPT-OSS's "bias,top<k>,softmax"; other rules append their scoring, groups, scale and bias
  // (docs/SPEC.md).
  std::string router_rule() const;

  // Throws Error naming the first field that is missing, non-positive or inconsistent.
  void validate() const;
  int64_t parameter_count() const;
};

// Reads a HuggingFace config.json of any family in the registry (include/epwa/arch.hpp); throws
// Error naming the file and field.
ModelConfig read_hf_config(const std::filesystem::path& config_json);
ModelConfig hf_config_from_json(const nlohmann::json& j);
nlohmann::json hf_config_to_json(const ModelConfig& c);

}  // namespace epwa
