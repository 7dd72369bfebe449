// ModelConfig: the per-layer view, validation and parameter count, for every family.
#include "epwa/config.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "epwa/arch.hpp"
#include "epwa/error.hpp"

namespace epwa {
namespace {
void positive(int64_t v, const char* field) {
  check(v > 0, std::string("config: ") + field + " must be positive, got " + std::to_string(v));
}
}  // namespace

bool ModelConfig::is_moe_layer(int32_t l) const {
  return !std::binary_search(dense_layers.begin(), dense_layers.end(), l);
}

std::vector<int32_t> ModelConfig::moe_layers() const {
  std::vector<int32_t> out;
  for (int32_t l = 0; l < num_layers; ++l)
    if (is_moe_layer(l)) out.push_back(l);
  return out;
}

int32_t ModelConfig::num_moe_layers() const {
  return static_cast<int32_t>(moe_layers().size());
}

LayerConfig ModelConfig::layer(int32_t l) const {
  LayerConfig lc;
  lc.moe = is_moe_layer(l);
  if (lc.moe) {
    lc.experts = num_experts;
    lc.experts_used = experts_per_token;
    lc.expert_ffn = expert_intermediate_size;
    lc.shared_ffn = shared_expert_intermediate_size;
    lc.shared_gate = shared_expert_gate;
  } else {
    lc.dense_ffn = intermediate_size;
  }
  lc.window = layer_window(l);
  return lc;
}

int32_t ModelConfig::layer_window(int32_t l) const {
  return std::binary_search(sliding_layers.begin(), sliding_layers.end(), l) ? sliding_window : 0;
}

int64_t ModelConfig::kv_cache_k_dim() const {
  return mla() ? int64_t{kv_lora_rank} + qk_rope_head_dim : int64_t{num_kv_heads} * head_dim;
}

int64_t ModelConfig::kv_cache_v_dim() const {
  return mla() ? 0 : int64_t{num_kv_heads} * head_dim;
}

float ModelConfig::attention_scale() const {
  double s = 1 / std::sqrt(static_cast<double>(head_dim));
  if (yarn.on() && yarn.mscale_all_dim != 0) {
    const double m = yarn_mscale(yarn.factor, yarn.mscale_all_dim);  // config.hpp
    s *= m * m;
  }
  return static_cast<float>(s);
}

bool ModelConfig::plain_routing() const {
  // GPT-OSS's router bias is on the logits (added before Backend::route).
  const bool scoring = router_scoring == RouterScoring::TopkSoftmax ||
                       (router_scoring == RouterScoring::Softmax && !router_bias);
  return scoring && n_group == 1 && routed_scaling_factor == 1;
}

std::string ModelConfig::router_rule() const {
  if (router_scoring == RouterScoring::TopkSoftmax)
    return (router_bias ? "bias,top" : "top") + std::to_string(experts_per_token) + ",softmax";
  const bool sigmoid = router_scoring == RouterScoring::Sigmoid;
  std::string r = std::string(sigmoid ? "sigmoid" : "softmax") + ",top" +
                  std::to_string(experts_per_token) + (norm_topk_prob ? ",renorm" : ",raw");
  if (plain_routing()) return r;
  if (router_bias) r += ",bias";
  if (n_group > 1)
    r += ",group" + std::to_string(n_group) + "/" + std::to_string(topk_group) +
         (group_score == GroupScore::Max ? "max" : "top2");
  char scale[32];
  std::snprintf(scale, sizeof scale, ",scale%.9g", static_cast<double>(routed_scaling_factor));
  return r + scale;
}

void ModelConfig::validate() const {
  const Architecture* arch = find_hf_architecture(architecture);
  check(arch != nullptr, "unsupported architecture '" + architecture + "' (epwa runs " +
                             known_architectures() + ")");
  check(arch->id == family,
        "config: architecture " + architecture + " is not of the family '" + family + "'");
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(num_layers, "num_hidden_layers");
  positive(num_heads, "num_attention_heads");
  positive(num_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(num_experts, "num_experts");
  positive(experts_per_token, "num_experts_per_tok");
  positive(expert_intermediate_size, "expert intermediate_size");
  positive(max_position_embeddings, "max_position_embeddings");
  check(num_heads % num_kv_heads == 0, "config: num_attention_heads " + std::to_string(num_heads) +
                                           " is not a multiple of num_key_value_heads " +
                                           std::to_string(num_kv_heads));
  check(mla() || head_dim % 2 == 0,
        "config: head_dim " + std::to_string(head_dim) + " must be even for RoPE");
  check(experts_per_token <= num_experts,
        "config: num_experts_per_tok " + std::to_string(experts_per_token) +
            " exceeds the number of experts " + std::to_string(num_experts));
  check(std::isfinite(rope_theta) && rope_theta > 0, "config: rope_theta must be positive");
  check(std::isfinite(rms_norm_eps) && rms_norm_eps > 0, "config: rms_norm_eps must be positive");
  check(std::isfinite(clip_qkv) && clip_qkv >= 0, "config: clip_qkv must be positive or unset");
  check(shared_expert_intermediate_size >= 0,
        "config: shared_expert_intermediate_size must not be negative");
  check(std::is_sorted(dense_layers.begin(), dense_layers.end()) &&
            std::adjacent_find(dense_layers.begin(), dense_layers.end()) == dense_layers.end(),
        "config: dense layers must be sorted and distinct");
  check(
      std::is_sorted(sliding_layers.begin(), sliding_layers.end()) &&
          std::adjacent_find(sliding_layers.begin(), sliding_layers.end()) == sliding_layers.end(),
      "config: sliding-window layers must be sorted and distinct");
  for (int32_t l : sliding_layers)
    check(l >= 0 && l < num_layers, "config: sliding-window layer " + std::to_string(l) +
                                        " is not one of the " + std::to_string(num_layers) +
                                        " layers");
  if (!sliding_layers.empty()) positive(sliding_window, "sliding_window");
  check(std::isfinite(swiglu_limit) && swiglu_limit >= 0,
        "config: swiglu_limit must be positive or unset");
  for (int32_t l : dense_layers)
    check(l >= 0 && l < num_layers, "config: dense layer " + std::to_string(l) +
                                        " is not one of the " + std::to_string(num_layers) +
                                        " layers");
  if (!dense_layers.empty()) positive(intermediate_size, "intermediate_size");
  check(num_moe_layers() > 0, "config: the model has no MoE layer (every layer is dense)");
  check(n_group >= 1 && num_experts % n_group == 0,
        "config: n_group " + std::to_string(n_group) + " does not divide the " +
            std::to_string(num_experts) + " routed experts");
  check(topk_group >= 1 && topk_group <= n_group,
        "config: topk_group " + std::to_string(topk_group) + " must be in [1, n_group]");
  check(n_group == 1 || experts_per_token <= topk_group * (num_experts / n_group),
        "config: num_experts_per_tok exceeds the experts of the topk_group groups");
  check(group_score != GroupScore::TopTwo || n_group == 1 || num_experts / n_group >= 2,
        "config: groups of fewer than 2 experts (the group score sums the top 2)");
  check(std::isfinite(routed_scaling_factor) && routed_scaling_factor > 0,
        "config: routed_scaling_factor must be positive");
  if (mla()) {
    positive(qk_nope_head_dim, "qk_nope_head_dim");
    positive(qk_rope_head_dim, "qk_rope_head_dim");
    positive(v_head_dim, "v_head_dim");
    check(q_lora_rank >= 0, "config: q_lora_rank must not be negative");
    check(qk_rope_head_dim % 2 == 0, "config: qk_rope_head_dim must be even for RoPE");
    check(head_dim == qk_nope_head_dim + qk_rope_head_dim && num_kv_heads == num_heads,
          "config: multi-head latent attention needs head_dim = qk_nope_head_dim + "
          "qk_rope_head_dim and as many KV heads as heads");
  }
  if (yarn.on()) {
    check(std::isfinite(yarn.factor) && yarn.factor > 0,
          "config: rope_scaling.factor must be positive");
    positive(yarn.original_max_position, "rope_scaling.original_max_position_embeddings");
    check(yarn.beta_fast > 0 && yarn.beta_slow > 0,
          "config: rope_scaling beta_fast/beta_slow must be positive");
    check(std::isfinite(yarn.attention_factor) && yarn.attention_factor >= 0,
          "config: rope_scaling.attention_factor must be positive");
  }
  check(bos_token_id >= 0 && bos_token_id < vocab_size,
        "config: bos_token_id " + std::to_string(bos_token_id) + " is outside the vocabulary");
  check(eos_token_id >= 0 && eos_token_id < vocab_size,
        "config: eos_token_id " + std::to_string(eos_token_id) + " is outside the vocabulary");
}

int64_t ModelConfig::parameter_count() const {
  const int64_t D = hidden_size, V = vocab_size;
  const int64_t q = int64_t{num_heads} * head_dim, kv = int64_t{num_kv_heads} * head_dim;
  int64_t attention = D * q + 2 * D * kv + q * D + 2 * D;  // q, k, v, o projections; two norms
  if (mla()) {
    const int64_t h = num_heads, lat = kv_lora_rank, qa = q_lora_rank;
    attention = (qa > 0 ? D * qa + qa + qa * q : D * q) + D * (lat + qk_rope_head_dim) + lat +
                lat * h * (qk_nope_head_dim + v_head_dim) + h * v_head_dim * D + 2 * D;
  }
  if (attention_bias) attention += q + 2 * kv;
  if (attention_out_bias) attention += D;
  if (attention_sinks) attention += num_heads;
  if (qk_norm == QkNorm::Full) attention += q + kv;
  if (qk_norm == QkNorm::PerHead) attention += 2 * int64_t{head_dim};
  int64_t total = V * D + D + (tie_word_embeddings ? 0 : V * D);
  for (int32_t l = 0; l < num_layers; ++l) {
    const LayerConfig lc = layer(l);
    total += attention;
    if (lc.moe)
      total += (router_bias ? lc.experts : 0) + int64_t{lc.experts} * D +
               int64_t{lc.experts} * 3 * D * lc.expert_ffn + 3 * D * lc.shared_ffn +
               (lc.shared_gate ? D : 0) +
               (expert_bias ? int64_t{lc.experts} * (2 * lc.expert_ffn + D) : 0);
    else
      total += 3 * D * lc.dense_ffn;
  }
  return total;
}

}  // namespace epwa
