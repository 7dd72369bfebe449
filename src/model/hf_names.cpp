#include "hf_names.hpp"

namespace epwa {

namespace hf_name {
std::string layer(int32_t layer, std::string_view what) {
  return "model.layers." + std::to_string(layer) + "." + std::string(what) + ".weight";
}
std::string expert(int32_t layer, int32_t expert, std::string_view which) {
  return "model.layers." + std::to_string(layer) + ".block_sparse_moe.experts." +
         std::to_string(expert) + "." + std::string(which) + ".weight";
}
}  // namespace hf_name

std::vector<HfTensor> hf_tensor_list(const ModelConfig& c) {
  using namespace hf_name;
  const int64_t d = c.hidden_size, hd = c.head_dim, in = c.intermediate_size;
  std::vector<HfTensor> t;
  t.push_back({std::string(kEmbed), {c.vocab_size, d}});
  for (int32_t l = 0; l < c.num_layers; ++l) {
    t.push_back({layer(l, kAttnNorm), {d}});
    t.push_back({layer(l, kQ), {c.num_heads * hd, d}});
    t.push_back({layer(l, kK), {c.num_kv_heads * hd, d}});
    t.push_back({layer(l, kV), {c.num_kv_heads * hd, d}});
    t.push_back({layer(l, kO), {d, c.num_heads * hd}});
    t.push_back({layer(l, kFfnNorm), {d}});
    t.push_back({layer(l, kRouter), {c.num_experts, d}, true});
    for (int32_t e = 0; e < c.num_experts; ++e) {
      t.push_back({expert(l, e, kW1), {in, d}});
      t.push_back({expert(l, e, kW2), {d, in}});
      t.push_back({expert(l, e, kW3), {in, d}});
    }
  }
  t.push_back({std::string(kFinalNorm), {d}});
  if (!c.tie_word_embeddings) t.push_back({std::string(kHead), {c.vocab_size, d}});
  return t;
}

}  // namespace epwa
