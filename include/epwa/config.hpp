// The hyper-parameters of an MoE transformer, whatever family and file they came from. The family's
// own rules (which layers are sparse, q/k norms, biases, shared experts) are read by its file in
// src/arch/ and stated here as plain fields, so that the engine knows no family by name.
#pragma once
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
};

// YaRN rope scaling (transformers' _compute_yarn_parameters); factor 0: plain RoPE.
struct RopeYarn {
  float factor = 0;
  float beta_fast = 32, beta_slow = 1;
  int32_t original_max_position_embeddings = 0;
  bool truncate = true;        // floor/ceil the correction range
  float attention_factor = 1;  // cos and sin are scaled by it
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
  RopeYarn yarn;

  // Experts.
  int32_t num_experts = 0;
  int32_t experts_per_token = 0;
  int32_t expert_intermediate_size = 0;         // width of one routed expert's FFN
  int32_t shared_expert_intermediate_size = 0;  // 0: no shared expert
  bool shared_expert_gate = false;
  RouterScoring router_scoring = RouterScoring::Softmax;
  bool norm_topk_prob = true;
  bool router_bias = false;  // the router is a linear layer with a bias
  bool expert_bias = false;  // each expert's gate, up and down projections have biases
  // > 0: GPT-OSS's SwiGLU: gate clamped above at the limit, up to +-limit,
  // (up + 1) * gate * sigmoid(1.702 gate); 0: silu(gate) * up.
  float swiglu_limit = 0;
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
  // The routing rule as IRSH-v2 hashes it: "softmax,top<k>,renorm" or "softmax,top<k>,raw";
  // GPT-OSS's "bias,top<k>,softmax".
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
