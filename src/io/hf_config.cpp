// HuggingFace config.json <-> ModelConfig for MixtralForCausalLM.
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "epwa/config.hpp"
#include "epwa/error.hpp"

namespace epwa {
namespace {

using nlohmann::json;

// The one place that says which architectures epwa runs.
constexpr const char* kMixtral = "MixtralForCausalLM";
void check_architecture(const std::string& arch) {
  check(arch == kMixtral, "unsupported architecture '" + arch + "' (epwa runs " + kMixtral + ")");
}

// Reads one field of the config object; every error names the field.
class Fields {
 public:
  explicit Fields(const json& j) : j_(j) {}

  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

  int32_t integer(const char* key) const {
    check(j_.contains(key), std::string("field '") + key + "' is missing");
    return as_int(j_[key], key);
  }
  int32_t integer(const char* key, int32_t fallback) const {
    return has(key) ? as_int(j_[key], key) : fallback;
  }
  float number(const char* key, float fallback) const {
    if (!has(key)) return fallback;
    return as_float(j_[key], key);
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    check(j_[key].is_boolean(),
          std::string("field '") + key + "' must be true or false, got " + j_[key].dump());
    return j_[key].get<bool>();
  }
  // An id that may be an integer or a list of integers (the first counts).
  int32_t token_id(const char* key, int32_t fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_[key];
    if (v.is_array()) {
      check(!v.empty(), std::string("field '") + key + "' is an empty list");
      return as_int(v.front(), key);
    }
    return as_int(v, key);
  }

  static int32_t as_int(const json& v, const char* key) {
    check(v.is_number_integer(),
          std::string("field '") + key + "' must be an integer, got " + v.dump());
    const bool fits = v.is_number_unsigned()
                          ? v.get<uint64_t>() <= static_cast<uint64_t>(INT32_MAX)
                          : v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX;
    check(fits, std::string("field '") + key + "' is out of range: " + v.dump());
    return static_cast<int32_t>(v.get<int64_t>());
  }
  static float as_float(const json& v, const char* key) {
    check(v.is_number(), std::string("field '") + key + "' must be a number, got " + v.dump());
    return static_cast<float>(v.get<double>());
  }

 private:
  const json& j_;
};

std::string architecture_of(const json& j) {
  if (j.contains("architectures") && !j["architectures"].is_null()) {
    const json& a = j["architectures"];
    check(a.is_array() && !a.empty() && a.front().is_string(),
          "field 'architectures' must be a non-empty list of names, got " + a.dump());
    return a.front().get<std::string>();
  }
  // Older or hand-written configs may carry only model_type.
  check(j.contains("model_type") && j["model_type"].is_string(),
        "field 'architectures' is missing (and no 'model_type')");
  const auto mt = j["model_type"].get<std::string>();
  check(mt == "mixtral", "unsupported model_type '" + mt + "' (epwa runs " + kMixtral + ")");
  return kMixtral;
}

// rope_theta sits at the top level (transformers 4) or in rope_parameters (transformers 5).
float rope_theta_of(const json& j, const Fields& f) {
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    const json& r = j[key];
    check(r.is_object(), std::string("field '") + key + "' must be an object, got " + r.dump());
    for (const char* type_key : {"rope_type", "type"})
      if (r.contains(type_key))
        check(r[type_key] == "default", std::string("unsupported ") + key + "." + type_key + " " +
                                            r[type_key].dump() + " (only default RoPE)");
    if (r.contains("rope_theta") && !f.has("rope_theta"))
      return Fields::as_float(r["rope_theta"], "rope_parameters.rope_theta");
  }
  return f.number("rope_theta", 1e6f);
}

// A float as the shortest decimal that reads back to it, so 1e-5f is written 1e-05, not
// 9.999999747378752e-06.
double shortest(float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

void positive(int64_t v, const char* field) {
  check(v > 0, std::string("config: ") + field + " must be positive, got " + std::to_string(v));
}

}  // namespace

void ModelConfig::validate() const {
  check_architecture(architecture);
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_layers, "num_hidden_layers");
  positive(num_heads, "num_attention_heads");
  positive(num_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(num_experts, "num_local_experts");
  positive(experts_per_token, "num_experts_per_tok");
  positive(max_position_embeddings, "max_position_embeddings");
  check(num_heads % num_kv_heads == 0, "config: num_attention_heads " + std::to_string(num_heads) +
                                           " is not a multiple of num_key_value_heads " +
                                           std::to_string(num_kv_heads));
  check(head_dim % 2 == 0,
        "config: head_dim " + std::to_string(head_dim) + " must be even for RoPE");
  check(experts_per_token <= num_experts,
        "config: num_experts_per_tok " + std::to_string(experts_per_token) +
            " exceeds num_local_experts " + std::to_string(num_experts));
  check(std::isfinite(rope_theta) && rope_theta > 0, "config: rope_theta must be positive");
  check(std::isfinite(rms_norm_eps) && rms_norm_eps > 0, "config: rms_norm_eps must be positive");
  check(bos_token_id >= 0 && bos_token_id < vocab_size,
        "config: bos_token_id " + std::to_string(bos_token_id) + " is outside the vocabulary");
  check(eos_token_id >= 0 && eos_token_id < vocab_size,
        "config: eos_token_id " + std::to_string(eos_token_id) + " is outside the vocabulary");
}

int64_t ModelConfig::parameter_count() const {
  const int64_t D = hidden_size, V = vocab_size, I = intermediate_size, E = num_experts;
  const int64_t q = int64_t{num_heads} * head_dim, kv = int64_t{num_kv_heads} * head_dim;
  const int64_t attention = D * q + 2 * D * kv + q * D;             // q, k, v, o projections
  const int64_t layer = attention + 2 * D + E * D + E * 3 * D * I;  // norms, router, experts
  return V * D + num_layers * layer + D + (tie_word_embeddings ? 0 : V * D);
}

ModelConfig hf_config_from_json(const json& j) {
  check(j.is_object(), "config is not a JSON object");
  const Fields f(j);
  ModelConfig c;
  c.architecture = architecture_of(j);
  check_architecture(c.architecture);
  if (f.has("hidden_act"))
    check(j["hidden_act"] == "silu",
          "unsupported hidden_act " + j["hidden_act"].dump() + " (Mixtral uses silu)");
  // transformers applies a sliding-window mask when this is set; the engine attends to everything.
  if (f.has("sliding_window")) {
    const int32_t w = Fields::as_int(j["sliding_window"], "sliding_window");
    check(w >= f.integer("max_position_embeddings", c.max_position_embeddings),
          "unsupported sliding_window " + std::to_string(w) + " (the engine uses full attention)");
  }

  c.vocab_size = f.integer("vocab_size");
  c.hidden_size = f.integer("hidden_size");
  c.intermediate_size = f.integer("intermediate_size");
  c.num_layers = f.integer("num_hidden_layers");
  c.num_heads = f.integer("num_attention_heads");
  c.num_kv_heads = f.integer("num_key_value_heads", c.num_heads);
  if (f.has("head_dim")) {
    c.head_dim = f.integer("head_dim");
  } else {
    positive(c.num_heads, "num_attention_heads");
    c.head_dim = c.hidden_size / c.num_heads;  // transformers' default
  }
  c.num_experts = f.integer("num_local_experts");
  c.experts_per_token = f.integer("num_experts_per_tok");
  c.rope_theta = rope_theta_of(j, f);
  c.rms_norm_eps = f.number("rms_norm_eps", c.rms_norm_eps);
  c.max_position_embeddings = f.integer("max_position_embeddings", c.max_position_embeddings);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", c.tie_word_embeddings);
  c.bos_token_id = f.token_id("bos_token_id", c.bos_token_id);
  c.eos_token_id = f.token_id("eos_token_id", c.eos_token_id);
  c.validate();
  return c;
}

ModelConfig read_hf_config(const std::filesystem::path& config_json) {
  std::ifstream in(config_json, std::ios::binary);
  check(in.good(), "cannot open " + config_json.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  const json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  check(!j.is_discarded(), config_json.string() + ": not valid JSON");
  try {
    return hf_config_from_json(j);
  } catch (const Error& e) {
    throw Error(config_json.string() + ": " + e.what());
  }
}

json hf_config_to_json(const ModelConfig& c) {
  const double theta = shortest(c.rope_theta);
  return {
      {"architectures", {c.architecture}},
      {"model_type", "mixtral"},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads},
      {"head_dim", c.head_dim},
      {"num_local_experts", c.num_experts},
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
      {"router_jitter_noise", 0.0},
      {"router_aux_loss_coef", 0.001},
      {"output_router_logits", false},
      {"use_cache", true},
  };
}

}  // namespace epwa
