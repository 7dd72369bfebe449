// The tensors of a Mixtral checkpoint in HuggingFace Hub naming, with their shapes.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "epwa/config.hpp"

namespace epwa {

// Hub tensor names, the one place they are spelled (loader, writer, converter).
namespace hf_name {
inline constexpr std::string_view kEmbed = "model.embed_tokens.weight";
inline constexpr std::string_view kFinalNorm = "model.norm.weight";
inline constexpr std::string_view kHead = "lm_head.weight";
inline constexpr std::string_view kAttnNorm = "input_layernorm", kQ = "self_attn.q_proj",
                                  kK = "self_attn.k_proj", kV = "self_attn.v_proj",
                                  kO = "self_attn.o_proj", kFfnNorm = "post_attention_layernorm",
                                  kRouter = "block_sparse_moe.gate";
inline constexpr std::string_view kW1 = "w1", kW2 = "w2", kW3 = "w3";
// "model.layers.{layer}.{what}.weight"
std::string layer(int32_t layer, std::string_view what);
// "model.layers.{layer}.block_sparse_moe.experts.{expert}.{which}.weight"
std::string expert(int32_t layer, int32_t expert, std::string_view which);
}  // namespace hf_name

struct HfTensor {
  std::string name;
  std::vector<int64_t> shape;
  bool is_router = false;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

std::vector<HfTensor> hf_tensor_list(const ModelConfig& c);

}  // namespace epwa
