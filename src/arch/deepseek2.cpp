// DeepSeek-V2 / V2-Lite (DeepseekV2ForCausalLM, transformers' modeling_deepseek_v2.py) and
// DeepSeek-V3 / R1 (DeepseekV3ForCausalLM, modeling_deepseek_v3.py); GGUF "deepseek2" for both.
// Multi-head latent attention (q_lora_rank optional, kv_lora_rank, qk_nope/rope_head_dim,
// v_head_dim), YaRN rope scaling, leading dense layers (first_k_dense_replace), ungated shared
// experts (mlp.shared_experts), and the routers: V2 softmax with topk_method greedy or
// group_limited_greedy (a group's score its best expert), V3 sigmoid with e_score_correction_bias
// for the choice only and noaux_tc groups (a group's score the sum of its best two biased scores);
// both scale the weights by routed_scaling_factor. V3's multi-token-prediction layers
// (num_nextn_predict_layers, stored as layers num_hidden_layers...) are not part of generation:
// the schema lists layers 0..num_hidden_layers-1 only, so their tensors are never read.
#include <nlohmann/json.hpp>
#include <string>

#include "arch/families.hpp"
#include "arch/hf_fields.hpp"
#include "epwa/error.hpp"
#include "epwa/gguf.hpp"

namespace epwa {
namespace {

using nlohmann::json;

std::string str(int64_t v) {
  return std::to_string(v);
}

json yarn_json(const ModelConfig& c) {
  json r = {{"rope_type", "yarn"},
            {"type", "yarn"},
            {"rope_theta", shortest(c.rope_theta)},
            {"factor", shortest(c.yarn.factor)},
            {"original_max_position_embeddings", c.yarn.original_max_position},
            {"beta_fast", shortest(c.yarn.beta_fast)},
            {"beta_slow", shortest(c.yarn.beta_slow)}};
  if (c.yarn.mscale != 0) r["mscale"] = shortest(c.yarn.mscale);
  if (c.yarn.mscale_all_dim != 0) r["mscale_all_dim"] = shortest(c.yarn.mscale_all_dim);
  if (c.yarn.attention_factor != 0) r["attention_factor"] = shortest(c.yarn.attention_factor);
  return r;
}

void read_common(const HfFields& f, ModelConfig& c) {
  // DeepseekV2Config / DeepseekV3Config defaults where the shared reader's differ.
  if (!f.has("rope_theta") && !f.has("rope_parameters")) c.rope_theta = 10000.0f;
  c.rms_norm_eps = f.number("rms_norm_eps", 1e-6f);
  c.max_position_embeddings = f.integer("max_position_embeddings", c.max_position_embeddings);
  c.intermediate_size = f.integer("intermediate_size");
  c.num_experts = f.integer("n_routed_experts");
  c.expert_intermediate_size = f.integer("moe_intermediate_size");
  const int32_t shared = f.integer("n_shared_experts", 0);
  check(shared >= 0, "config: n_shared_experts must not be negative, got " + str(shared));
  c.shared_expert_intermediate_size = shared * c.expert_intermediate_size;
  c.shared_expert_gate = false;
  check(!f.boolean("attention_bias", false),
        "unsupported attention_bias true (DeepSeek's released models have none)");
  check(!f.boolean("mlp_bias", false), "unsupported mlp_bias true");
  c.q_lora_rank = f.integer("q_lora_rank", 0);  // null: q from one projection (V2-Lite)
  c.kv_lora_rank = f.integer("kv_lora_rank");
  c.qk_nope_head_dim = f.integer("qk_nope_head_dim");
  c.qk_rope_head_dim = f.integer("qk_rope_head_dim");
  c.v_head_dim = f.integer("v_head_dim");
  check(c.kv_lora_rank > 0, "config: kv_lora_rank must be positive, got " + str(c.kv_lora_rank));
  c.head_dim = c.qk_nope_head_dim + c.qk_rope_head_dim;  // config's head_dim is the rope part
  c.num_kv_heads = c.num_heads;                          // num_key_value_heads is unused by MLA
  const int32_t first = f.integer("first_k_dense_replace", 0);
  check(first >= 0, "config: first_k_dense_replace must not be negative, got " + str(first));
  // transformers' decoder layer: experts iff layer >= first_k_dense_replace (moe_layer_freq, a
  // field of the remote code, is 1 in every released model).
  check(f.integer("moe_layer_freq", 1) == 1, "unsupported moe_layer_freq != 1");
  c.dense_layers.clear();
  for (int32_t l = 0; l < std::min(first, c.num_layers); ++l) c.dense_layers.push_back(l);
  c.routed_scaling_factor = f.number("routed_scaling_factor", c.routed_scaling_factor);
  c.n_group = f.integer("n_group", 1);
  c.topk_group = f.integer("topk_group", 1);
}

int32_t shared_count(const ModelConfig& c) {
  check(c.shared_expert_intermediate_size % c.expert_intermediate_size == 0,
        "config: shared expert width " + str(c.shared_expert_intermediate_size) +
            " is not a multiple of moe_intermediate_size " + str(c.expert_intermediate_size));
  return c.shared_expert_intermediate_size / c.expert_intermediate_size;
}

int32_t first_dense(const ModelConfig& c) {
  const int32_t first = static_cast<int32_t>(c.dense_layers.size());
  for (int32_t l = 0; l < first; ++l)
    check(c.dense_layers[l] == l,
          "config: DeepSeek-V2/V3's dense layers are the first ones (first_k_dense_replace)");
  return first;
}

void write_common(const ModelConfig& c, json& j) {
  check(c.mla(), "config: DeepSeek-V2/V3 need multi-head latent attention (kv_lora_rank)");
  j["head_dim"] = c.qk_rope_head_dim;  // what transformers' rotary reads
  j["num_key_value_heads"] = c.num_heads;
  j["intermediate_size"] = c.intermediate_size;
  j["n_routed_experts"] = c.num_experts;
  j["moe_intermediate_size"] = c.expert_intermediate_size;
  j["n_shared_experts"] = shared_count(c);
  j["q_lora_rank"] = c.q_lora_rank > 0 ? json(c.q_lora_rank) : json(nullptr);
  j["kv_lora_rank"] = c.kv_lora_rank;
  j["qk_nope_head_dim"] = c.qk_nope_head_dim;
  j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  j["v_head_dim"] = c.v_head_dim;
  j["first_k_dense_replace"] = first_dense(c);
  j["moe_layer_freq"] = 1;
  j["routed_scaling_factor"] = shortest(c.routed_scaling_factor);
  j["n_group"] = c.n_group;
  j["topk_group"] = c.topk_group;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  if (c.yarn.on()) {
    j["rope_scaling"] = yarn_json(c);
    j["rope_parameters"] = yarn_json(c);
  } else {
    j["rope_scaling"] = nullptr;
  }
}

void read_hf_v2(const HfFields& f, ModelConfig& c) {
  read_common(f, c);
  if (f.has("scoring_func"))
    check(f.raw()["scoring_func"] == "softmax", "unsupported scoring_func " +
                                                    f.raw()["scoring_func"].dump() +
                                                    " (DeepSeek-V2 scores with softmax)");
  const std::string method = f.raw().value("topk_method", "greedy");
  check(method == "greedy" || method == "group_limited_greedy",
        "unsupported topk_method '" + method + "' (DeepSeek-V2: greedy or group_limited_greedy)");
  if (method == "greedy") c.n_group = c.topk_group = 1;
  c.group_score = GroupScore::Max;
  c.router_scoring = RouterScoring::Softmax;
  c.router_bias = false;
  // The remote modeling code renormalises when norm_topk_prob and k > 1; transformers' class
  // never does (false in every released V2 model, where the two agree).
  c.norm_topk_prob = f.boolean("norm_topk_prob", false) && c.experts_per_token > 1;
}

void write_hf_v2(const ModelConfig& c, json& j) {
  check(c.router_scoring == RouterScoring::Softmax && !c.router_bias &&
            c.group_score == GroupScore::Max,
        "config: DeepSeek-V2's router is softmax, without correction bias");
  write_common(c, j);
  j["topk_method"] = c.n_group > 1 ? "group_limited_greedy" : "greedy";
  j["scoring_func"] = "softmax";
}

void read_hf_v3(const HfFields& f, ModelConfig& c) {
  read_common(f, c);
  if (f.has("scoring_func"))
    check(f.raw()["scoring_func"] == "sigmoid", "unsupported scoring_func " +
                                                    f.raw()["scoring_func"].dump() +
                                                    " (DeepSeek-V3 scores with sigmoid)");
  if (f.has("topk_method"))
    check(f.raw()["topk_method"] == "noaux_tc",
          "unsupported topk_method " + f.raw()["topk_method"].dump() + " (DeepSeek-V3: noaux_tc)");
  check(f.boolean("rope_interleave", true),
        "unsupported rope_interleave false (DeepSeek-V3's rope pairs are interleaved)");
  c.router_scoring = RouterScoring::Sigmoid;
  c.router_bias = true;
  c.group_score = GroupScore::TopTwo;
  c.norm_topk_prob = f.boolean("norm_topk_prob", true);
}

void write_hf_v3(const ModelConfig& c, json& j) {
  check(c.router_scoring == RouterScoring::Sigmoid && c.router_bias &&
            c.group_score == GroupScore::TopTwo,
        "config: DeepSeek-V3's router is sigmoid with a correction bias");
  write_common(c, j);
  j["topk_method"] = "noaux_tc";
  j["scoring_func"] = "sigmoid";
  j["rope_interleave"] = true;
  j["num_nextn_predict_layers"] = 0;
}

// GGUF "deepseek2" in llama.cpp's keys (its src/llama-model.cpp and DeepseekV2Model in
// convert_hf_to_gguf.py); what llama.cpp (c392e50) has no key for is written as epwa.* keys:
// docs/GGUF.md.
constexpr uint32_t kGatingSoftmax = 1, kGatingSigmoid = 2;  // llama.cpp's expert_gating_func

void read_gguf(const GgufFile& f, ModelConfig& c) {
  const std::string a = "deepseek2.";
  auto u32 = [&](const std::string& key, uint32_t fallback) {
    return static_cast<int32_t>(f.find_u32(a + key).value_or(fallback));
  };
  c.q_lora_rank = u32("attention.q_lora_rank", 0);
  c.kv_lora_rank = static_cast<int32_t>(f.get_u32(a + "attention.kv_lora_rank"));
  c.qk_rope_head_dim = static_cast<int32_t>(f.get_u32(a + "rope.dimension_count"));
  c.head_dim = static_cast<int32_t>(f.get_u32(a + "attention.key_length"));
  c.qk_nope_head_dim = c.head_dim - c.qk_rope_head_dim;
  c.v_head_dim = static_cast<int32_t>(f.get_u32(a + "attention.value_length"));
  c.num_kv_heads = c.num_heads;
  c.shared_expert_intermediate_size = u32("expert_shared_count", 0) * c.expert_intermediate_size;
  c.shared_expert_gate = false;
  c.routed_scaling_factor = f.find_f32(a + "expert_weights_scale").value_or(1.0f);
  c.norm_topk_prob = false;  // expert_weights_norm overrides (read after this)
  const uint32_t gating = f.find_u32(a + "expert_gating_func").value_or(kGatingSoftmax);
  check(gating == kGatingSoftmax || gating == kGatingSigmoid,
        f.name() + ": deepseek2.expert_gating_func " + std::to_string(gating) +
            " is not softmax (1) or sigmoid (2)");
  const bool bias =
      f.find_tensor("blk." + std::to_string(c.num_layers - 1) + ".exp_probs_b.bias") != nullptr;
  c.router_bias = bias;
  if (gating == kGatingSigmoid) {
    check(bias, f.name() + ": a sigmoid router without exp_probs_b (DeepSeek-V3 has one)");
    c.architecture = "DeepseekV3ForCausalLM";
    c.family = "deepseek3";
    c.router_scoring = RouterScoring::Sigmoid;
    c.group_score = GroupScore::TopTwo;
  } else {
    check(!bias, f.name() + ": a softmax router with exp_probs_b is not DeepSeek-V2's");
    c.router_scoring = RouterScoring::Softmax;
    c.group_score = GroupScore::Max;
  }
  c.n_group = u32("expert_group_count", 1);
  c.topk_group = u32("expert_group_used_count", c.n_group);
  if (c.dense_layers.empty())  // epwa.dense_layers, when present, is read already
    for (int32_t l = 0; l < u32("leading_dense_block_count", 0); ++l) c.dense_layers.push_back(l);
  if (const std::string* type = f.find_string(a + "rope.scaling.type"); type && *type == "yarn") {
    c.yarn.factor = f.get_f32(a + "rope.scaling.factor");
    c.yarn.original_max_position = u32("rope.scaling.original_context_length", 0);
    // llama.cpp: softmax scale mscale^2 with mscale = 1 + yarn_log_multiplier * ln(factor), i.e.
    // yarn_log_multiplier = 0.1 * mscale_all_dim; cos and sin unscaled unless epwa says.
    c.yarn.mscale_all_dim = f.find_f32(a + "rope.scaling.yarn_log_multiplier").value_or(0) / 0.1f;
    c.yarn.attention_factor = f.find_f32("epwa.rope.scaling.attention_factor").value_or(1.0f);
    c.yarn.beta_fast = f.find_f32("epwa.rope.scaling.yarn_beta_fast").value_or(32);
    c.yarn.beta_slow = f.find_f32("epwa.rope.scaling.yarn_beta_slow").value_or(1);
    c.yarn.truncate = f.find_bool("epwa.rope.scaling.yarn_truncate").value_or(true);
  } else if (type != nullptr) {
    check(*type == "none", f.name() + ": unsupported deepseek2.rope.scaling.type '" + *type + "'");
  }
}

void write_gguf(const ModelConfig& c, GgufWriter& w) {
  check(c.mla(), "config: DeepSeek-V2/V3 need multi-head latent attention (kv_lora_rank)");
  const std::string a = "deepseek2.";
  w.set_u32(a + "leading_dense_block_count", first_dense(c));
  w.set_u32(a + "expert_feed_forward_length", c.expert_intermediate_size);
  w.set_u32(a + "expert_shared_count", shared_count(c));
  w.set_f32(a + "expert_weights_scale", c.routed_scaling_factor);
  w.set_u32(a + "expert_gating_func",
            c.router_scoring == RouterScoring::Sigmoid ? kGatingSigmoid : kGatingSoftmax);
  if (c.n_group > 1) {  // later llama.cpp's keys; c392e50 ignores them (docs/GGUF.md)
    w.set_u32(a + "expert_group_count", c.n_group);
    w.set_u32(a + "expert_group_used_count", c.topk_group);
  }
  if (c.q_lora_rank > 0) w.set_u32(a + "attention.q_lora_rank", c.q_lora_rank);
  w.set_u32(a + "attention.kv_lora_rank", c.kv_lora_rank);
  w.set_u32(a + "attention.key_length", c.head_dim);
  w.set_u32(a + "attention.value_length", c.v_head_dim);
  w.set_u32(a + "rope.dimension_count", c.qk_rope_head_dim);
  // llama.cpp reads the multiplier even without YaRN.
  w.set_f32(a + "rope.scaling.yarn_log_multiplier", 0.1f * c.yarn.mscale_all_dim);
  if (c.yarn.on()) {
    w.set_string(a + "rope.scaling.type", "yarn");
    w.set_f32(a + "rope.scaling.factor", c.yarn.factor);
    w.set_u32(a + "rope.scaling.original_context_length", c.yarn.original_max_position);
    if (c.rope_attention_factor() != 1)
      w.set_f32("epwa.rope.scaling.attention_factor", c.rope_attention_factor());
    if (c.yarn.beta_fast != 32) w.set_f32("epwa.rope.scaling.yarn_beta_fast", c.yarn.beta_fast);
    if (c.yarn.beta_slow != 1) w.set_f32("epwa.rope.scaling.yarn_beta_slow", c.yarn.beta_slow);
    if (!c.yarn.truncate) w.set_bool("epwa.rope.scaling.yarn_truncate", false);
  }
}

}  // namespace

const Architecture& arch_deepseek_v2() {
  static const Architecture a{"deepseek2",   "DeepseekV2ForCausalLM",
                              "deepseek_v2", "deepseek2",
                              false,         read_hf_v2,
                              write_hf_v2,   read_gguf,
                              write_gguf,    deepseek_hf_name};
  return a;
}

const Architecture& arch_deepseek_v3() {
  static const Architecture a{"deepseek3",   "DeepseekV3ForCausalLM",
                              "deepseek_v3", "deepseek2",
                              false,         read_hf_v3,
                              write_hf_v3,   read_gguf,
                              write_gguf,    deepseek_hf_name};
  return a;
}

}  // namespace epwa
