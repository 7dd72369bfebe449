// Loads a HuggingFace Mixtral checkpoint (Hub naming) from safetensors, memory-mapped, no copies.
#include <memory>

#include "epwa/error.hpp"
#include "epwa/safetensors.hpp"
#include "hf_names.hpp"
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

  auto get = [&](std::string_view name) -> TensorView { return st->get(std::string(name)); };
  using namespace hf_name;
  ModelWeights w;
  w.embed = get(kEmbed);
  w.final_norm = get(kFinalNorm);
  const TensorView* head = st->find(std::string(kHead));
  check(head || c.tie_word_embeddings, "missing tensor " + std::string(kHead) +
                                           " (and tie_word_embeddings is false) in " + path.string());
  w.head = c.tie_word_embeddings && !head ? w.embed : *head;
  for (int32_t l = 0; l < c.num_layers; ++l) {
    LayerWeights L;
    L.attn_norm = get(layer(l, kAttnNorm));
    L.wq = get(layer(l, kQ));
    L.wk = get(layer(l, kK));
    L.wv = get(layer(l, kV));
    L.wo = get(layer(l, kO));
    L.ffn_norm = get(layer(l, kFfnNorm));
    L.router = get(layer(l, kRouter));
    for (int32_t e = 0; e < c.num_experts; ++e) {
      L.w1.push_back(get(expert(l, e, kW1)));
      L.w2.push_back(get(expert(l, e, kW2)));
      L.w3.push_back(get(expert(l, e, kW3)));
    }
    w.layers.push_back(std::move(L));
  }
  check_weights(c, w);
  return std::make_unique<Model>(std::move(c), std::move(w), std::move(st), path, "safetensors");
}

}  // namespace epwa
