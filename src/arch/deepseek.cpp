// DeepSeek-MoE V1 (DeepseekForCausalLM, the remote modeling_deepseek.py of deepseek-moe-16b;
// GGUF "deepseek"): Llama attention, fine-grained routed experts with a softmax router (top-k
// weights renormalised only with norm_topk_prob and k > 1), n_shared_experts shared experts fused
// into one ungated FFN of n_shared_experts * moe_intermediate_size added to the routed output, and
// dense layers: layer l is an MoE layer iff l >= first_k_dense_replace and l % moe_layer_freq == 0.
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "arch/families.hpp"
#include "arch/hf_fields.hpp"
#include "epwa/error.hpp"
#include "epwa/gguf.hpp"

namespace epwa {
namespace {

std::string str(int64_t v) {
  return std::to_string(v);
}

// modeling_deepseek.py computes head_dim as hidden_size / num_heads (and refuses a remainder);
// llama.cpp's deepseek graph has the same square q/o projections.
void check_heads(const ModelConfig& c) {
  check(c.head_dim * c.num_heads == c.hidden_size,
        "config: head_dim " + str(c.head_dim) + " x num_attention_heads " + str(c.num_heads) +
            " must equal hidden_size " + str(c.hidden_size) + " (DeepSeek-MoE V1 attention)");
}

void set_dense_layers(ModelConfig& c, int32_t first_dense, int32_t freq) {
  c.dense_layers.clear();
  for (int32_t l = 0; l < c.num_layers; ++l)
    if (l < first_dense || l % freq != 0) c.dense_layers.push_back(l);
}

// The (first_k_dense_replace, moe_layer_freq) that give c.dense_layers; throws if none does.
std::pair<int32_t, int32_t> dense_rule(const ModelConfig& c) {
  const std::vector<int32_t> moe = c.moe_layers();
  const int32_t first = moe.empty() ? 0 : moe.front();
  for (int32_t freq = 1; freq <= c.num_layers; ++freq) {
    ModelConfig t = c;
    set_dense_layers(t, first, freq);
    if (t.dense_layers == c.dense_layers) return {first, freq};
  }
  throw Error(
      "config: the dense layers of this model are not DeepSeek's pattern "
      "(first_k_dense_replace, moe_layer_freq)");
}

int32_t shared_count(const ModelConfig& c) {
  check(c.shared_expert_intermediate_size % c.expert_intermediate_size == 0,
        "config: shared expert width " + str(c.shared_expert_intermediate_size) +
            " is not a multiple of moe_intermediate_size " + str(c.expert_intermediate_size));
  return c.shared_expert_intermediate_size / c.expert_intermediate_size;
}

void read_hf(const HfFields& f, ModelConfig& c) {
  check_heads(c);
  // DeepseekConfig's defaults where the shared reader's differ.
  if (!f.has("rope_theta") && !f.has("rope_parameters")) c.rope_theta = 10000.0f;
  c.rms_norm_eps = f.number("rms_norm_eps", 1e-6f);
  c.max_position_embeddings = f.integer("max_position_embeddings", 2048);
  c.intermediate_size = f.integer("intermediate_size");
  c.num_experts = f.integer("n_routed_experts");  // null (a dense model) is refused
  c.expert_intermediate_size = f.integer("moe_intermediate_size");
  const int32_t shared = f.integer("n_shared_experts", 0);
  check(shared >= 0, "config: n_shared_experts must not be negative, got " + str(shared));
  c.shared_expert_intermediate_size = shared * c.expert_intermediate_size;
  c.shared_expert_gate = false;
  if (f.has("scoring_func"))
    check(f.raw()["scoring_func"] == "softmax", "unsupported scoring_func " +
                                                    f.raw()["scoring_func"].dump() +
                                                    " (DeepSeek-MoE V1 scores with softmax)");
  // MoEGate renormalises only when top_k > 1 (k = 1 keeps the raw probability).
  c.norm_topk_prob = f.boolean("norm_topk_prob", false) && c.experts_per_token > 1;
  c.attention_bias = f.boolean("attention_bias", false);
  const int32_t first = f.integer("first_k_dense_replace", 0);
  const int32_t freq = f.integer("moe_layer_freq", 1);
  check(first >= 0, "config: first_k_dense_replace must not be negative, got " + str(first));
  check(freq > 0, "config: moe_layer_freq must be positive, got " + str(freq));
  set_dense_layers(c, first, freq);
}

void write_hf(const ModelConfig& c, nlohmann::json& j) {
  check_heads(c);
  const auto [first, freq] = dense_rule(c);
  j.erase("head_dim");  // not a DeepseekConfig field
  j["intermediate_size"] = c.intermediate_size;
  j["n_routed_experts"] = c.num_experts;
  j["moe_intermediate_size"] = c.expert_intermediate_size;
  const int32_t shared = shared_count(c);
  j["n_shared_experts"] = shared > 0 ? nlohmann::json(shared) : nlohmann::json(nullptr);
  j["scoring_func"] = "softmax";
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["first_k_dense_replace"] = first;
  j["moe_layer_freq"] = freq;
  j["attention_bias"] = c.attention_bias;
  j["aux_loss_alpha"] = 0.001;
  j["seq_aux"] = true;
  j["pretraining_tp"] = 1;
  j["rope_scaling"] = nullptr;
}

// llama.cpp's deepseek graph: the leading dense layers only, softmax top-k never renormalised,
// scaled by expert_weights_scale, plus the shared experts (n_ff_exp * expert_shared_count wide).
void read_gguf(const GgufFile& f, ModelConfig& c) {
  check_heads(c);
  const int32_t shared =
      static_cast<int32_t>(f.find_u32("deepseek.expert_shared_count").value_or(0));
  c.shared_expert_intermediate_size = shared * c.expert_intermediate_size;
  c.shared_expert_gate = false;
  c.norm_topk_prob = false;  // expert_weights_norm (epwa writes it) overrides
  const float scale = f.find_f32("deepseek.expert_weights_scale").value_or(1.0f);
  check(scale == 1.0f, f.name() + ": deepseek.expert_weights_scale " + std::to_string(scale) +
                           " is not supported (DeepSeek-MoE V1 weights its experts by 1)");
  if (c.dense_layers.empty())  // epwa.dense_layers, when present, is read already
    set_dense_layers(
        c, static_cast<int32_t>(f.find_u32("deepseek.leading_dense_block_count").value_or(0)), 1);
}

void write_gguf(const ModelConfig& c, GgufWriter& w) {
  check_heads(c);
  w.set_u32("deepseek.leading_dense_block_count", dense_rule(c).first);
  w.set_u32("deepseek.expert_feed_forward_length", c.expert_intermediate_size);
  w.set_u32("deepseek.expert_shared_count", shared_count(c));
  w.set_f32("deepseek.expert_weights_scale", 1.0f);
}

}  // namespace

// The shared experts are one module, mlp.shared_experts (plural).
std::string deepseek_hf_name(TensorKind kind, int32_t layer, int32_t expert) {
  const std::string p = "model.layers." + std::to_string(layer) + ".mlp.shared_experts.";
  switch (kind) {
    case TensorKind::ShexpGate:
      return p + "gate_proj.weight";
    case TensorKind::ShexpDown:
      return p + "down_proj.weight";
    case TensorKind::ShexpUp:
      return p + "up_proj.weight";
    default:
      return hf_standard_name(kind, layer, expert);
  }
}

const Architecture& arch_deepseek() {
  static const Architecture a{
      "deepseek", "DeepseekForCausalLM", "deepseek", "deepseek", true, read_hf, write_hf, read_gguf,
      write_gguf, deepseek_hf_name};
  return a;
}

}  // namespace epwa
