// Loads a HuggingFace Mixtral checkpoint (Hub naming) from safetensors, memory-mapped, no copies.
#include <memory>

#include "epwa/error.hpp"
#include "epwa/safetensors.hpp"
#include "loaders.hpp"
#include "weights_check.hpp"

namespace epwa {

std::unique_ptr<Model> load_hf(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::is_directory(path) ? path : path.parent_path();
  const fs::path config_path = dir / "config.json";
  check(fs::exists(config_path), "no config.json beside " + path.string());
  ModelConfig c = read_hf_config(config_path);
  auto st = std::make_shared<SafetensorsModel>(path);

  auto get = [&](const std::string& name) -> TensorView { return st->get(name); };
  ModelWeights w;
  w.embed = get("model.embed_tokens.weight");
  w.final_norm = get("model.norm.weight");
  const TensorView* head = st->find("lm_head.weight");
  check(head || c.tie_word_embeddings,
        "missing tensor lm_head.weight (and tie_word_embeddings is false) in " + path.string());
  w.head = c.tie_word_embeddings && !head ? w.embed : *head;
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights L;
    L.attn_norm = get(p + "input_layernorm.weight");
    L.wq = get(p + "self_attn.q_proj.weight");
    L.wk = get(p + "self_attn.k_proj.weight");
    L.wv = get(p + "self_attn.v_proj.weight");
    L.wo = get(p + "self_attn.o_proj.weight");
    L.ffn_norm = get(p + "post_attention_layernorm.weight");
    L.router = get(p + "block_sparse_moe.gate.weight");
    for (int32_t e = 0; e < c.num_experts; ++e) {
      const std::string ep = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      L.w1.push_back(get(ep + "w1.weight"));
      L.w2.push_back(get(ep + "w2.weight"));
      L.w3.push_back(get(ep + "w3.weight"));
    }
    w.layers.push_back(std::move(L));
  }
  check_weights(c, w);
  return std::make_unique<Model>(std::move(c), std::move(w), std::move(st), path, "safetensors");
}

}  // namespace epwa
