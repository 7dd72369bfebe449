// The list of families, and the parts of config.json and GGUF metadata that every family shares.
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "arch/families.hpp"
#include "arch/hf_fields.hpp"
#include "epwa/arch.hpp"
#include "epwa/error.hpp"
#include "epwa/gguf.hpp"
#include "epwa/platform.hpp"

namespace epwa {

using nlohmann::json;

// A new family is one file in src/arch/ and one line here.
std::span<const Architecture* const> architectures() {
  static const Architecture* const kAll[] = {
      &arch_mixtral(),  &arch_qwen2_moe(),   &arch_olmoe(),       &arch_qwen3_moe(),
      &arch_deepseek(), &arch_deepseek_v2(), &arch_deepseek_v3(), &arch_gpt_oss()};
  return kAll;
}

std::string known_architectures() {
  std::string out;
  for (const Architecture* a : architectures())
    out += (out.empty() ? "" : ", ") + std::string(a->hf_class);
  return out;
}

const Architecture& architecture(std::string_view id) {
  for (const Architecture* a : architectures())
    if (a->id == id) return *a;
  throw Error("unknown model family '" + std::string(id) + "' (epwa runs " + known_architectures() +
              ")");
}

const Architecture* find_hf_architecture(std::string_view name) {
  for (const Architecture* a : architectures())
    if (a->hf_class == name || a->model_type == name) return a;
  return nullptr;
}

const Architecture* find_gguf_architecture(std::string_view gguf_arch) {
  for (const Architecture* a : architectures())
    if (a->gguf == gguf_arch) return a;
  return nullptr;
}

// ---- config.json ----

int32_t HfFields::integer(const char* key) const {
  check(j_.contains(key), std::string("field '") + key + "' is missing");
  return as_int(j_[key], key);
}
int32_t HfFields::integer(const char* key, int32_t fallback) const {
  return has(key) ? as_int(j_[key], key) : fallback;
}
float HfFields::number(const char* key, float fallback) const {
  return has(key) ? as_float(j_[key], key) : fallback;
}
bool HfFields::boolean(const char* key, bool fallback) const {
  if (!has(key)) return fallback;
  check(j_[key].is_boolean(),
        std::string("field '") + key + "' must be true or false, got " + j_[key].dump());
  return j_[key].get<bool>();
}
int32_t HfFields::token_id(const char* key, int32_t fallback) const {
  if (!has(key)) return fallback;
  const json& v = j_[key];
  if (v.is_array()) {
    check(!v.empty(), std::string("field '") + key + "' is an empty list");
    return as_int(v.front(), key);
  }
  return as_int(v, key);
}
std::vector<int32_t> HfFields::integers(const char* key) const {
  if (!has(key)) return {};
  const json& v = j_[key];
  check(v.is_array(),
        std::string("field '") + key + "' must be a list of integers, got " + v.dump());
  std::vector<int32_t> out;
  for (const json& x : v) out.push_back(as_int(x, key));
  return out;
}
int32_t HfFields::integer_of(std::initializer_list<const char*> keys) const {
  for (const char* k : keys)
    if (has(k)) return integer(k);
  return integer(*keys.begin());  // names the first in the error
}
int32_t HfFields::as_int(const json& v, const char* key) {
  check(v.is_number_integer(),
        std::string("field '") + key + "' must be an integer, got " + v.dump());
  const bool fits = v.is_number_unsigned()
                        ? v.get<uint64_t>() <= static_cast<uint64_t>(INT32_MAX)
                        : v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX;
  check(fits, std::string("field '") + key + "' is out of range: " + v.dump());
  return static_cast<int32_t>(v.get<int64_t>());
}
float HfFields::as_float(const json& v, const char* key) {
  check(v.is_number(), std::string("field '") + key + "' must be a number, got " + v.dump());
  return static_cast<float>(v.get<double>());
}

double shortest(float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

namespace {

const Architecture& architecture_of(const json& j) {
  if (j.contains("architectures") && !j["architectures"].is_null()) {
    const json& a = j["architectures"];
    check(a.is_array() && !a.empty() && a.front().is_string(),
          "field 'architectures' must be a non-empty list of names, got " + a.dump());
    const auto name = a.front().get<std::string>();
    const Architecture* arch = find_hf_architecture(name);
    check(arch,
          "unsupported architecture '" + name + "' (epwa runs " + known_architectures() + ")");
    return *arch;
  }
  // Older or hand-written configs may carry only model_type.
  check(j.contains("model_type") && j["model_type"].is_string(),
        "field 'architectures' is missing (and no 'model_type')");
  const auto mt = j["model_type"].get<std::string>();
  const Architecture* arch = find_hf_architecture(mt);
  check(arch, "unsupported model_type '" + mt + "' (epwa runs " + known_architectures() + ")");
  return *arch;
}

// rope_theta sits at the top level (transformers 4) or in rope_parameters (transformers 5); the
// scaling is default RoPE or YaRN (its parameters as _compute_yarn_parameters reads them), for
// every family.
void read_rope(const json& j, const HfFields& f, ModelConfig& c) {
  std::optional<float> theta;
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    const json& r = j[key];
    check(r.is_object(), std::string("field '") + key + "' must be an object, got " + r.dump());
    const HfFields rf(r);
    for (const char* type_key : {"rope_type", "type"}) {
      if (!r.contains(type_key)) continue;
      const json& type = r[type_key];
      check(type == "default" || type == "yarn", std::string("unsupported ") + key + "." +
                                                     type_key + " " + type.dump() +
                                                     " (default RoPE or YaRN)");
      if (type != "yarn") continue;
      Yarn& y = c.yarn;
      check(rf.has("factor"), std::string("field '") + key + ".factor' is missing (YaRN)");
      y.factor = HfFields::as_float(r["factor"], "rope_scaling.factor");
      check(y.factor > 1, "config: " + std::string(key) + ".factor must be > 1 for yarn, got " +
                              r["factor"].dump());
      // transformers: `get(...) or default`, so a null or zero is the default too.
      y.original_max_position = rf.integer("original_max_position_embeddings", 0) != 0
                                    ? rf.integer("original_max_position_embeddings", 0)
                                    : f.integer("max_position_embeddings", 0);
      y.beta_fast = rf.number("beta_fast", 0) != 0 ? rf.number("beta_fast", 0) : 32.0f;
      y.beta_slow = rf.number("beta_slow", 0) != 0 ? rf.number("beta_slow", 0) : 1.0f;
      y.truncate = rf.boolean("truncate", true);
      // Kept as given: DeepSeek's softmax scale reads mscale_all_dim; Yarn::cos_sin_factor derives
      // the attention factor from them when none is given.
      y.mscale = rf.number("mscale", 0);
      y.mscale_all_dim = rf.number("mscale_all_dim", 0);
      y.attention_factor = rf.number("attention_factor", 0);
    }
    if (r.contains("rope_theta") && !f.has("rope_theta") && !theta)
      theta = HfFields::as_float(r["rope_theta"], "rope_parameters.rope_theta");
  }
  c.rope_theta = f.has("rope_theta") ? f.number("rope_theta", 0) : theta.value_or(c.rope_theta);
}

}  // namespace

ModelConfig hf_config_from_json(const json& j) {
  check(j.is_object(), "config is not a JSON object");
  const HfFields f(j);
  ModelConfig c;
  const Architecture& arch = architecture_of(j);
  c.architecture = arch.hf_class;
  c.family = arch.id;
  if (f.has("hidden_act"))
    check(j["hidden_act"] == "silu",
          "unsupported hidden_act " + j["hidden_act"].dump() + " (epwa runs silu)");

  c.vocab_size = f.integer("vocab_size");
  c.hidden_size = f.integer("hidden_size");
  c.num_layers = f.integer("num_hidden_layers");
  c.num_heads = f.integer("num_attention_heads");
  c.num_kv_heads = f.integer("num_key_value_heads", c.num_heads);
  if (f.has("head_dim")) {
    c.head_dim = f.integer("head_dim");
  } else {
    check(c.num_heads > 0,
          "config: num_attention_heads must be positive, got " + std::to_string(c.num_heads));
    c.head_dim = c.hidden_size / c.num_heads;  // transformers' default
  }
  c.experts_per_token = f.integer("num_experts_per_tok");
  c.rope_theta = 1e6f;  // the default of the families that do not set one
  read_rope(j, f, c);
  c.rms_norm_eps = f.number("rms_norm_eps", c.rms_norm_eps);
  c.max_position_embeddings = f.integer("max_position_embeddings", c.max_position_embeddings);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", c.tie_word_embeddings);
  c.bos_token_id = f.token_id("bos_token_id", c.bos_token_id);
  c.eos_token_id = f.token_id("eos_token_id", c.eos_token_id);
  arch.read_hf(f, c);
  // transformers applies a sliding-window mask when this is set (and, for the families with the
  // switch, use_sliding_window is true); only a family that reads its layers' windows runs one.
  if (c.sliding_layers.empty() && f.has("sliding_window") &&
      f.boolean("use_sliding_window", true)) {
    const int32_t w = HfFields::as_int(j["sliding_window"], "sliding_window");
    check(w >= c.max_position_embeddings,
          "unsupported sliding_window " + std::to_string(w) + " (the engine uses full attention)");
  }
  c.validate();
  return c;
}

ModelConfig read_hf_config(const std::filesystem::path& config_json) {
  std::ifstream in(config_json, std::ios::binary);
  check(in.good(), "cannot open " + path_to_utf8(config_json));
  std::ostringstream ss;
  ss << in.rdbuf();
  const json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  check(!j.is_discarded(), path_to_utf8(config_json) + ": not valid JSON");
  try {
    return hf_config_from_json(j);
  } catch (const Error& e) {
    throw Error(path_to_utf8(config_json) + ": " + e.what());
  }
}

json hf_config_to_json(const ModelConfig& c) {
  const Architecture& arch = architecture(c.family);
  const double theta = shortest(c.rope_theta);
  json j = {
      {"architectures", {c.architecture}},
      {"model_type", arch.model_type},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads},
      {"head_dim", c.head_dim},
      {"num_experts_per_tok", c.experts_per_token},
      {"rope_theta", theta},
      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", theta}}},
      {"rms_norm_eps", shortest(c.rms_norm_eps)},
      {"max_position_embeddings", c.max_position_embeddings},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"bos_token_id", c.bos_token_id},
      {"eos_token_id", c.eos_token_id},
      {"hidden_act", "silu"},
      {"sliding_window", nullptr},
      {"attention_dropout", 0.0},
      {"initializer_range", 0.02},
      {"output_router_logits", false},
      {"use_cache", true},
  };
  arch.write_hf(c, j);
  return j;
}

// ---- GGUF metadata ----

ModelConfig gguf_model_config(const GgufFile& f) {
  const std::string& name = f.get_string("general.architecture");
  const Architecture* arch = find_gguf_architecture(name);
  std::string known;
  for (const Architecture* a : architectures())
    known += (known.empty() ? "" : ", ") + std::string(a->gguf);
  check(arch,
        f.name() + ": architecture '" + name + "' is not supported (epwa runs " + known + ")");
  const std::string a = name + ".";
  ModelConfig c;
  c.architecture = arch->hf_class;
  c.family = arch->id;
  c.hidden_size = static_cast<int32_t>(f.get_u32(a + "embedding_length"));
  c.num_layers = static_cast<int32_t>(f.get_u32(a + "block_count"));
  c.intermediate_size = static_cast<int32_t>(f.find_u32(a + "feed_forward_length").value_or(0));
  c.num_heads = static_cast<int32_t>(f.get_u32(a + "attention.head_count"));
  c.num_kv_heads =
      static_cast<int32_t>(f.find_u32(a + "attention.head_count_kv").value_or(c.num_heads));
  c.head_dim = static_cast<int32_t>(
      f.find_u32(a + "attention.key_length")
          .value_or(f.find_u32(a + "rope.dimension_count")
                        .value_or(c.num_heads ? c.hidden_size / c.num_heads : 0)));
  const auto experts = f.find_u32(a + "expert_count");
  check(experts && *experts > 0, f.name() + ": '" + name + "' model without experts (" + a +
                                     "expert_count): epwa runs MoE models only");
  c.num_experts = static_cast<int32_t>(*experts);
  c.experts_per_token = static_cast<int32_t>(f.get_u32(a + "expert_used_count"));
  c.expert_intermediate_size = static_cast<int32_t>(
      f.find_u32(a + "expert_feed_forward_length").value_or(c.intermediate_size));
  c.rope_theta = f.find_f32(a + "rope.freq_base").value_or(10000.0f);
  c.rms_norm_eps = f.get_f32(a + "attention.layer_norm_rms_epsilon");
  c.max_position_embeddings = static_cast<int32_t>(f.find_u32(a + "context_length").value_or(4096));
  c.vocab_size = static_cast<int32_t>(f.tensor("token_embd.weight").rows());
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  c.bos_token_id = static_cast<int32_t>(f.find_u32("tokenizer.ggml.bos_token_id").value_or(1));
  c.eos_token_id = static_cast<int32_t>(f.find_u32("tokenizer.ggml.eos_token_id").value_or(2));
  c.clip_qkv = f.find_f32(a + "attention.clamp_kqv").value_or(0.0f);
  c.attention_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  if (const GgufArray* dense = f.find_array("epwa.dense_layers"))
    for (uint32_t l : dense->as<uint32_t>()) c.dense_layers.push_back(static_cast<int32_t>(l));
  arch->read_gguf(f, c);
  if (const auto norm = f.find_bool(a + "expert_weights_norm")) c.norm_topk_prob = *norm;
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(f.name() + ": " + e.what());
  }
  return c;
}

void write_gguf_config(const ModelConfig& c, GgufWriter& w) {
  const Architecture& arch = architecture(c.family);
  const std::string a = std::string(arch.gguf) + ".";
  w.set_string("general.architecture", std::string(arch.gguf));
  w.set_u32(a + "vocab_size", c.vocab_size);
  w.set_u32(a + "context_length", c.max_position_embeddings);
  w.set_u32(a + "embedding_length", c.hidden_size);
  w.set_u32(a + "block_count", c.num_layers);
  w.set_u32(a + "feed_forward_length", c.intermediate_size);
  w.set_u32(a + "attention.head_count", c.num_heads);
  w.set_u32(a + "attention.head_count_kv", c.num_kv_heads);
  w.set_f32(a + "rope.freq_base", c.rope_theta);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  w.set_u32(a + "expert_count", c.num_experts);
  w.set_u32(a + "expert_used_count", c.experts_per_token);
  w.set_u32(a + "rope.dimension_count", c.head_dim);
  if (c.head_dim * c.num_heads != c.hidden_size) {
    w.set_u32(a + "attention.key_length", c.head_dim);
    w.set_u32(a + "attention.value_length", c.head_dim);
  }
  w.set_bool(a + "expert_weights_norm", c.norm_topk_prob);
  if (c.clip_qkv > 0) w.set_f32(a + "attention.clamp_kqv", c.clip_qkv);
  // llama.cpp has no key for dense layers among MoE ones (released Qwen-MoE models have none);
  // epwa reads its own.
  if (!c.dense_layers.empty()) {
    std::vector<uint32_t> dense(c.dense_layers.begin(), c.dense_layers.end());
    w.set_array("epwa.dense_layers", GgufArray(std::move(dense)));
  }
  arch.write_gguf(c, w);
}

}  // namespace epwa
