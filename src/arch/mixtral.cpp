// Mixtral (MixtralForCausalLM; GGUF "llama" with experts): every layer sparse, softmax router with
// the top-k weights renormalised, no biases, no q/k norm.
#include <nlohmann/json.hpp>

#include "arch/families.hpp"
#include "arch/hf_fields.hpp"
#include "epwa/gguf.hpp"

namespace epwa {
namespace {

void read_hf(const HfFields& f, ModelConfig& c) {
  c.intermediate_size = f.integer("intermediate_size");
  c.expert_intermediate_size = c.intermediate_size;
  c.num_experts = f.integer("num_local_experts");
}

void write_hf(const ModelConfig& c, nlohmann::json& j) {
  j["intermediate_size"] = c.expert_intermediate_size;
  j["num_local_experts"] = c.num_experts;
  j["router_jitter_noise"] = 0.0;
  j["router_aux_loss_coef"] = 0.001;
}

// The expert width is feed_forward_length (registry.cpp's fallback when there is no
// expert_feed_forward_length); llama.cpp's defaults are Mixtral's.
void read_gguf(const GgufFile&, ModelConfig&) {}

void write_gguf(const ModelConfig&, GgufWriter&) {}

// Mixtral names its sparse block block_sparse_moe and its experts' matrices w1 (gate), w2 (down),
// w3 (up).
std::string hf_name(TensorKind kind, int32_t layer, int32_t expert) {
  const std::string p = "model.layers." + std::to_string(layer) + ".block_sparse_moe.";
  const std::string x = p + "experts." + std::to_string(expert) + ".";
  switch (kind) {
    case TensorKind::Router:
      return p + "gate.weight";
    case TensorKind::ExpGate:
      return x + "w1.weight";
    case TensorKind::ExpDown:
      return x + "w2.weight";
    case TensorKind::ExpUp:
      return x + "w3.weight";
    default:
      return hf_standard_name(kind, layer, expert);
  }
}

}  // namespace

const Architecture& arch_mixtral() {
  static const Architecture a{
      "mixtral", "MixtralForCausalLM", "mixtral", "llama", true, read_hf, write_hf,
      read_gguf, write_gguf,           hf_name};
  return a;
}

}  // namespace epwa
